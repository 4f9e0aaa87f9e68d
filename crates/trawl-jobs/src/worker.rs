//! What runs a job: the [`Worker`] trait, what it returns ([`JobResult`]),
//! what it is given ([`JobContext`]), and the set of workers a manager runs
//! by kind ([`Workers`]).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::claim::OnTimeout;
use crate::job::Job;

/// Runs jobs of one kind.
///
/// `J` is the job's payload: a typed [`Job`] registered with
/// [`Workers::register`], or a raw `serde_json::Value` registered by kind
/// with [`Workers::register_raw`].
///
/// # Contract
///
/// - `process` may be called for many jobs at once, from many tasks (up to
///   the manager's `max_concurrent_jobs`); a worker keeps no per-job state
///   in `self` without synchronising it.
/// - The same job may be processed more than once (at least once, never
///   twice at the same time): after a crash, a lost lease, or a release at
///   shutdown, it runs again. Make processing idempotent.
/// - The future returned by `process` is dropped at its next `.await` when
///   the job is cancelled, times out, or is released at shutdown; the
///   context's [`cancellation`](JobContext::cancellation) token fires at the
///   same moment, so work the worker handed to other tasks or threads can
///   stop too.
/// - A panic in `process` fails the attempt (it is retried like
///   [`JobResult::Retry`] without a delay of its own); it never stops the
///   manager.
/// - `health_check` is called at every heartbeat and by
///   [`WorkerHandle::health`](crate::WorkerHandle::health); it must be
///   cheap and must not block.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use trawl_jobs::{Job, JobContext, JobResult, Worker};
///
/// #[derive(Serialize, Deserialize)]
/// struct Thumbnail {
///     image: String,
/// }
///
/// impl Job for Thumbnail {
///     const KIND: &'static str = "thumbnail";
/// }
///
/// struct Thumbnailer;
///
/// impl Worker<Thumbnail> for Thumbnailer {
///     async fn process(&self, ctx: &JobContext, job: Thumbnail) -> JobResult {
///         if job.image.is_empty() {
///             return JobResult::fail("no image");
///         }
///         ctx.record_metric("bytes", 1024.0);
///         JobResult::Success
///     }
/// }
/// ```
pub trait Worker<J>: Send + Sync + 'static {
    /// Runs one attempt of `job` and says how it ended.
    fn process(&self, ctx: &JobContext, job: J) -> impl Future<Output = JobResult> + Send;

    /// Whether the worker can take jobs (its own dependencies are up).
    /// Reported in the registry and by health checks; an unhealthy worker
    /// still gets jobs. `true` unless overridden.
    fn health_check(&self) -> bool {
        true
    }
}

/// How an attempt ended, as the worker says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    /// The job is done.
    Success,
    /// The attempt failed and may succeed later: the job runs again after
    /// `after` (or the manager's backoff for this attempt) while it has
    /// attempts left, and is a dead letter with `error` once it has none.
    Retry {
        /// The wait before the next attempt; `None` for the backoff of the
        /// manager's retry policy.
        after: Option<Duration>,
        /// What went wrong.
        error: String,
    },
    /// The job can never succeed (bad input, a refused permission…): a dead
    /// letter at once, with `error`.
    Fail {
        /// What went wrong.
        error: String,
    },
    /// The worker chose not to do the job: it ends succeeded, its attempt
    /// recorded as `skipped` with `reason`.
    Skipped {
        /// Why not.
        reason: String,
    },
    /// The job waits for a signal named `signal` until `until`; what then
    /// happens without one is `on_timeout`. The job is stored as
    /// `suspended` (signals and the suspension timeout come with the next
    /// version of the queue).
    Suspend {
        /// The deadline of the wait.
        until: DateTime<Utc>,
        /// The key a signal must name to wake the job.
        signal: String,
        /// What happens at the deadline.
        on_timeout: OnTimeout,
    },
}

impl JobResult {
    /// [`JobResult::Retry`] after the manager's backoff.
    pub fn retry(error: impl Into<String>) -> JobResult {
        JobResult::Retry {
            after: None,
            error: error.into(),
        }
    }

    /// [`JobResult::Fail`]: a dead letter.
    pub fn fail(error: impl Into<String>) -> JobResult {
        JobResult::Fail {
            error: error.into(),
        }
    }

    /// [`JobResult::Skipped`].
    pub fn skipped(reason: impl Into<String>) -> JobResult {
        JobResult::Skipped {
            reason: reason.into(),
        }
    }
}

/// Why a job's [cancellation token](JobContext::cancellation) fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// Someone cancelled the job ([`JobQueue::cancel`](crate::JobQueue::cancel)).
    Cancelled,
    /// The attempt ran past its timeout.
    TimedOut,
    /// The manager shut down and its grace period ended.
    Shutdown,
    /// The worker's lease on the job was lost (the database could not be
    /// reached for longer than the lease, and the job went to another
    /// worker).
    LeaseLost,
}

/// What a worker knows about the job it runs. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    id: i64,
    kind: String,
    queue: String,
    attempt: u32,
    max_attempts: u32,
    timeout: Duration,
    token: CancellationToken,
    stop: OnceLock<StopReason>,
    metrics: Arc<Metrics>,
}

impl JobContext {
    pub(crate) fn new(
        id: i64,
        kind: String,
        queue: String,
        attempt: u32,
        max_attempts: u32,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> JobContext {
        JobContext {
            inner: Arc::new(ContextInner {
                id,
                kind,
                queue,
                attempt,
                max_attempts,
                timeout,
                token: CancellationToken::new(),
                stop: OnceLock::new(),
                metrics,
            }),
        }
    }

    /// The job's id.
    pub fn id(&self) -> i64 {
        self.inner.id
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// The queue the job came from.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// Attempts in all; this is the last one when it equals
    /// [`attempt`](Self::attempt).
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// How long this attempt may run.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// A token that fires when the job is cancelled, times out, loses its
    /// lease, or is released at shutdown. Clone it into tasks or threads the
    /// worker starts.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.inner.token
    }

    /// Whether the token has fired.
    pub fn is_cancelled(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    /// Why the token fired, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.inner.stop.get().copied()
    }

    /// Records a measurement of this job (bytes copied, objects healed…):
    /// emitted as a `tracing` event (target `trawl_jobs::metrics`, level
    /// debug) and added to the per-kind aggregates that
    /// [`WorkerHandle::metrics`](crate::WorkerHandle::metrics) reads.
    /// A value that is not finite is ignored.
    pub fn record_metric(&self, name: &str, value: f64) {
        if !value.is_finite() {
            return;
        }
        tracing::debug!(
            target: "trawl_jobs::metrics",
            job_id = self.inner.id,
            kind = %self.inner.kind,
            metric = name,
            value,
        );
        self.inner.metrics.record(&self.inner.kind, name, value);
    }

    /// Fires the token for `reason`, unless it fired already. Returns
    /// whether this call fired it.
    pub(crate) fn stop(&self, reason: StopReason) -> bool {
        if self.inner.stop.set(reason).is_ok() {
            self.inner.token.cancel();
            true
        } else {
            false
        }
    }
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.inner.id)
            .field("kind", &self.inner.kind)
            .field("attempt", &self.inner.attempt)
            .field("max_attempts", &self.inner.max_attempts)
            .field("stop_reason", &self.stop_reason())
            .finish_non_exhaustive()
    }
}

/// A [`Worker`] made of a closure, for small workers and tests.
///
/// ```
/// use trawl_jobs::{JobResult, Workers, worker_fn};
///
/// let mut workers = Workers::new();
/// workers.register_raw(
///     "echo",
///     worker_fn(|_ctx, payload: serde_json::Value| async move {
///         println!("{payload}");
///         JobResult::Success
///     }),
/// );
/// ```
pub fn worker_fn<F>(f: F) -> WorkerFn<F> {
    WorkerFn(f)
}

/// The [`Worker`] that [`worker_fn`] makes.
#[derive(Clone, Copy)]
pub struct WorkerFn<F>(F);

impl<F> fmt::Debug for WorkerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkerFn")
    }
}

impl<J, F, Fut> Worker<J> for WorkerFn<F>
where
    J: Send + 'static,
    F: Fn(JobContext, J) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = JobResult> + Send,
{
    fn process(&self, ctx: &JobContext, job: J) -> impl Future<Output = JobResult> + Send {
        (self.0)(ctx.clone(), job)
    }
}

/// The workers a manager runs, by job kind.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use trawl_jobs::{Job, JobContext, JobResult, Worker, Workers};
///
/// #[derive(Serialize, Deserialize)]
/// struct Cleanup {
///     bucket: String,
/// }
///
/// impl Job for Cleanup {
///     const KIND: &'static str = "cleanup";
/// }
///
/// struct Cleaner;
///
/// impl Worker<Cleanup> for Cleaner {
///     async fn process(&self, _ctx: &JobContext, _job: Cleanup) -> JobResult {
///         JobResult::Success
///     }
/// }
///
/// let mut workers = Workers::new();
/// workers.register::<Cleanup, _>(Cleaner);
/// assert!(workers.kinds().any(|k| k == "cleanup"));
/// ```
#[derive(Clone, Default)]
pub struct Workers {
    by_kind: HashMap<String, Arc<dyn ErasedWorker>>,
}

impl Workers {
    /// An empty set.
    pub fn new() -> Workers {
        Workers::default()
    }

    /// Runs jobs of kind `J::KIND` with `worker`, their payloads
    /// deserialized into `J`. A payload that does not deserialize is a dead
    /// letter with the serde error. Replaces an earlier worker of the kind.
    pub fn register<J: Job, W: Worker<J>>(&mut self, worker: W) -> &mut Workers {
        self.by_kind.insert(
            J::KIND.to_owned(),
            Arc::new(Typed {
                worker: Arc::new(worker),
                job: PhantomData::<fn() -> J>,
            }),
        );
        self
    }

    /// Runs jobs of `kind` with `worker`, given their raw JSON payloads.
    /// Replaces an earlier worker of the kind.
    ///
    /// # Panics
    ///
    /// If `kind` is empty (no job can have it).
    pub fn register_raw<W: Worker<serde_json::Value>>(
        &mut self,
        kind: impl Into<String>,
        worker: W,
    ) -> &mut Workers {
        let kind = kind.into();
        assert!(!kind.is_empty(), "a job kind must not be empty");
        self.by_kind.insert(
            kind,
            Arc::new(Raw {
                worker: Arc::new(worker),
            }),
        );
        self
    }

    /// The kinds with a worker, in no particular order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.by_kind.keys().map(String::as_str)
    }

    /// Whether no worker is registered.
    pub fn is_empty(&self) -> bool {
        self.by_kind.is_empty()
    }

    pub(crate) fn get(&self, kind: &str) -> Option<&Arc<dyn ErasedWorker>> {
        self.by_kind.get(kind)
    }

    /// Each kind with its worker's `health_check`, sorted by kind.
    pub(crate) fn health(&self) -> Vec<(String, bool)> {
        let mut health: Vec<(String, bool)> = self
            .by_kind
            .iter()
            .map(|(kind, worker)| (kind.clone(), worker.health_check()))
            .collect();
        health.sort();
        health
    }
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<&str> = self.kinds().collect();
        kinds.sort_unstable();
        f.debug_struct("Workers").field("kinds", &kinds).finish()
    }
}

/// A job's run, boxed: workers are stored without their payload type.
pub(crate) type JobFuture = Pin<Box<dyn Future<Output = JobResult> + Send>>;

/// A worker with its payload type erased.
pub(crate) trait ErasedWorker: Send + Sync {
    /// The run of one attempt, or the reason the payload cannot be read.
    fn start(&self, ctx: JobContext, payload: serde_json::Value) -> Result<JobFuture, String>;

    fn health_check(&self) -> bool;
}

struct Typed<J, W> {
    worker: Arc<W>,
    job: PhantomData<fn() -> J>,
}

impl<J: Job, W: Worker<J>> ErasedWorker for Typed<J, W> {
    fn start(&self, ctx: JobContext, payload: serde_json::Value) -> Result<JobFuture, String> {
        let job: J = serde_json::from_value(payload).map_err(|err| {
            format!(
                "cannot deserialize the payload of a '{}' job: {err}",
                ctx.kind()
            )
        })?;
        let worker = Arc::clone(&self.worker);
        Ok(Box::pin(async move { worker.process(&ctx, job).await }))
    }

    fn health_check(&self) -> bool {
        self.worker.health_check()
    }
}

/// A worker of raw JSON payloads.
struct Raw<W> {
    worker: Arc<W>,
}

impl<W: Worker<serde_json::Value>> ErasedWorker for Raw<W> {
    fn start(&self, ctx: JobContext, payload: serde_json::Value) -> Result<JobFuture, String> {
        let worker = Arc::clone(&self.worker);
        Ok(Box::pin(async move { worker.process(&ctx, payload).await }))
    }

    fn health_check(&self) -> bool {
        self.worker.health_check()
    }
}

/// One metric's aggregate for one job kind, as
/// [`WorkerHandle::metrics`](crate::WorkerHandle::metrics) reports it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MetricSummary {
    /// The job kind.
    pub kind: String,
    /// The metric's name.
    pub name: String,
    /// How many values were recorded.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// The latest.
    pub last: f64,
}

/// Per-kind aggregates of [`JobContext::record_metric`], shared by the jobs
/// of one manager.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// By kind, then by name.
    by_kind: Mutex<HashMap<String, HashMap<String, MetricSummary>>>,
}

impl Metrics {
    fn record(&self, kind: &str, name: &str, value: f64) {
        let mut by_kind = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by borrowed strings: no allocation once a metric exists.
        if let Some(summary) = by_kind.get_mut(kind).and_then(|m| m.get_mut(name)) {
            summary.count += 1;
            summary.sum += value;
            summary.min = summary.min.min(value);
            summary.max = summary.max.max(value);
            summary.last = value;
            return;
        }
        by_kind.entry(kind.to_owned()).or_default().insert(
            name.to_owned(),
            MetricSummary {
                kind: kind.to_owned(),
                name: name.to_owned(),
                count: 1,
                sum: value,
                min: value,
                max: value,
                last: value,
            },
        );
    }

    pub(crate) fn snapshot(&self) -> Vec<MetricSummary> {
        let by_kind = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<MetricSummary> =
            by_kind.values().flat_map(|m| m.values().cloned()).collect();
        all.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        all
    }
}
