//! Periodic jobs: a job enqueued once per period of a schedule (a cron
//! expression or a fixed interval), however many nodes run the scheduler.
//!
//! Each node computes the current period of every schedule on its own clock
//! and enqueues the job with a unique key naming the period
//! (`periodic:<name>:<period start, ms>`), held for the period and a minute
//! more: the first node to enqueue wins, the others get its id back. Give
//! the scheduler a leadership signal to have only the leader enqueue (fewer
//! statements); the unique key keeps it exactly once per period either way,
//! also while leadership moves.
//!
//! A node that starts in the middle of a period enqueues that period's job
//! at once (if nobody did); periods that passed while no node ran are not
//! made up.
//!
//! ```no_run
//! # async fn example(queue: trawl_jobs::JobQueue) -> trawl_jobs::Result<()> {
//! use std::time::Duration;
//! use trawl_jobs::{NewJob, Periodic, PeriodicJob, Schedule};
//!
//! let jobs = vec![
//!     // Every night at 02:30 (UTC).
//!     PeriodicJob::new("nightly-rescan", Schedule::cron("30 2 * * *")?,
//!         NewJob::new("rescan", serde_json::json!({"bucket": "logs"}))),
//!     // Every 5 minutes.
//!     PeriodicJob::new("metrics", Schedule::every(Duration::from_secs(300))?,
//!         NewJob::new("collect_metrics", serde_json::json!({}))),
//! ];
//! let scheduler = Periodic::start(queue, jobs, None)?;
//! // ... at shutdown:
//! scheduler.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::flow::EnqueueOutcome;
use crate::job::NewJob;
use crate::queue::JobQueue;

/// How long a period's unique key outlives the period.
const KEY_GRACE: Duration = Duration::from_secs(60);

/// The longest the scheduler sleeps before it looks at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The pause after a failed enqueue.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// When a periodic job is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Cron(Box<croner::Cron>),
    Every(Duration),
}

impl Schedule {
    /// A cron expression, in UTC: 5 fields (minute, hour, day of month,
    /// month, day of week), or 6 with seconds first; `@daily` and the like
    /// work too.
    pub fn cron(expression: &str) -> Result<Schedule> {
        let cron = croner::Cron::from_str(expression).map_err(|err| {
            Error::invalid("schedule", format!("cron expression '{expression}': {err}"))
        })?;
        Ok(Schedule(Kind::Cron(Box::new(cron))))
    }

    /// Every `interval`, in periods aligned on the Unix epoch (every hour
    /// starts on the hour). At least one second.
    pub fn every(interval: Duration) -> Result<Schedule> {
        if interval < Duration::from_secs(1) {
            return Err(Error::invalid(
                "schedule",
                format!("an interval of {interval:?} (must be at least 1 s)"),
            ));
        }
        Ok(Schedule(Kind::Every(interval)))
    }

    /// The period `now` falls in: its start (at or before `now`) and the
    /// next period's start (after `now`). `None` for a cron expression that
    /// never matches around `now`.
    pub fn period(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match &self.0 {
            Kind::Cron(cron) => {
                let start = cron.find_previous_occurrence(&now, true).ok()?;
                let next = cron.find_next_occurrence(&now, false).ok()?;
                Some((start, next))
            }
            Kind::Every(interval) => {
                let step = i64::try_from(interval.as_millis()).ok()?;
                let start_ms = now.timestamp_millis().div_euclid(step) * step;
                let start = Utc.timestamp_millis_opt(start_ms).single()?;
                Some((start, start + chrono::Duration::milliseconds(step)))
            }
        }
    }
}

/// A job enqueued once per period of its schedule.
#[derive(Debug, Clone)]
pub struct PeriodicJob {
    name: String,
    schedule: Schedule,
    job: NewJob,
}

impl PeriodicJob {
    /// `job` enqueued once per period of `schedule`; `name` tells the
    /// periodic jobs apart (it is part of the unique key of each period).
    pub fn new(name: impl Into<String>, schedule: Schedule, job: NewJob) -> PeriodicJob {
        PeriodicJob {
            name: name.into(),
            schedule,
            job,
        }
    }

    /// The job of the period starting at `start`, up to `next`.
    fn for_period(&self, start: DateTime<Utc>, next: DateTime<Utc>) -> NewJob {
        let period = (next - start).to_std().unwrap_or_default() + KEY_GRACE;
        let key = format!("periodic:{}:{}", self.name, start.timestamp_millis());
        self.job.clone().run_at(start).unique_for(key, period)
    }
}

/// Runs periodic jobs on one node. See the [module](self) documentation.
#[derive(Debug)]
pub struct Periodic {
    stop: CancellationToken,
    task: JoinHandle<()>,
    enqueued: Arc<AtomicU64>,
}

impl Periodic {
    /// Starts enqueueing `jobs` on `queue` (on the caller's tokio runtime).
    /// With `leader`, only while it says `true` (see the leadership of
    /// [`Leadership::changes`](crate::Leadership::changes)). Fails if two jobs share a name or a job is
    /// invalid.
    pub fn start(
        queue: JobQueue,
        jobs: Vec<PeriodicJob>,
        leader: Option<watch::Receiver<bool>>,
    ) -> Result<Periodic> {
        let mut names = HashSet::new();
        for job in &jobs {
            if job.name.is_empty() || !names.insert(job.name.as_str()) {
                return Err(Error::invalid(
                    "periodic",
                    format!("the name '{}' is empty or used twice", job.name),
                ));
            }
            job.job.validate()?;
        }
        let stop = CancellationToken::new();
        let enqueued = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(queue, jobs, leader, stop.clone(), enqueued.clone()));
        Ok(Periodic {
            stop,
            task,
            enqueued,
        })
    }

    /// Jobs this node enqueued (periods another node had already enqueued
    /// are not counted).
    pub fn enqueued(&self) -> u64 {
        self.enqueued.load(Ordering::Relaxed)
    }

    /// Stops the scheduler and waits for it.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(
    queue: JobQueue,
    jobs: Vec<PeriodicJob>,
    mut leader: Option<watch::Receiver<bool>>,
    stop: CancellationToken,
    enqueued: Arc<AtomicU64>,
) {
    // The period each job was last enqueued for (by this node or another).
    let mut done: Vec<Option<DateTime<Utc>>> = vec![None; jobs.len()];
    loop {
        if let Some(leader) = leader.as_mut()
            && !*leader.borrow_and_update()
        {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = leader.changed() => {
                    if changed.is_err() {
                        // The leadership is gone for good: never lead again.
                        stop.cancelled().await;
                        return;
                    }
                    continue;
                }
            }
        }
        let now = Utc::now();
        let mut wake = now + chrono::Duration::from_std(MAX_SLEEP).unwrap_or_default();
        let mut failed = false;
        for (job, done) in jobs.iter().zip(done.iter_mut()) {
            let Some((start, next)) = job.schedule.period(now) else {
                continue;
            };
            wake = wake.min(next);
            if *done == Some(start) {
                continue;
            }
            match queue.enqueue_unique(job.for_period(start, next)).await {
                Ok(outcome) => {
                    *done = Some(start);
                    if let EnqueueOutcome::Enqueued(_) = outcome {
                        enqueued.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(name = %job.name, %start, "periodic job enqueued");
                    }
                }
                Err(err) => {
                    failed = true;
                    tracing::warn!(name = %job.name, error = %err, "cannot enqueue a periodic job");
                }
            }
        }
        let sleep = if failed {
            RETRY_AFTER
        } else {
            (wake - Utc::now()).to_std().unwrap_or_default()
        };
        let leader_changed = async {
            match leader.as_mut() {
                Some(leader) => {
                    let _ = leader.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(sleep.min(MAX_SLEEP)) => {}
            _ = leader_changed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_periods_run_from_one_match_to_the_next() {
        let nightly = Schedule::cron("30 2 * * *").unwrap();
        let (start, next) = nightly.period(at("2030-01-02T10:00:00Z")).unwrap();
        assert_eq!(start, at("2030-01-02T02:30:00Z"));
        assert_eq!(next, at("2030-01-03T02:30:00Z"));
        let (start, _) = nightly.period(at("2030-01-02T02:30:00Z")).unwrap();
        assert_eq!(
            start,
            at("2030-01-02T02:30:00Z"),
            "a match starts its own period"
        );
        let seconds = Schedule::cron("*/10 * * * * *").unwrap();
        let (start, next) = seconds.period(at("2030-01-02T10:00:15Z")).unwrap();
        assert_eq!(
            (start, next),
            (at("2030-01-02T10:00:10Z"), at("2030-01-02T10:00:20Z"))
        );
    }

    #[test]
    fn intervals_are_aligned_on_the_epoch() {
        let hourly = Schedule::every(Duration::from_secs(3600)).unwrap();
        let (start, next) = hourly.period(at("2030-01-02T10:59:59Z")).unwrap();
        assert_eq!(
            (start, next),
            (at("2030-01-02T10:00:00Z"), at("2030-01-02T11:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_the_expression() {
        let err = Schedule::cron("61 * * * *").unwrap_err();
        assert!(err.to_string().contains("'61 * * * *'"), "{err}");
        assert!(Schedule::every(Duration::from_millis(10)).is_err());
    }
}
