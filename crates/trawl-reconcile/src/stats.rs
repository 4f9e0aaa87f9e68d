//! Per-reconciler figures, shared between a task and the handle.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one reconciler has done since the supervisor started, read with
/// [`ReconcilerHandle::stats`](crate::ReconcilerHandle::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcilerStats {
    /// The reconciler's name.
    pub name: String,
    /// Its interval, after the configuration's overrides.
    pub interval: Duration,
    /// Ticks finished (each walks every partition once, or stops early
    /// for a shutdown).
    pub ticks: u64,
    /// Calls of the reconciler's `tick` that committed.
    pub partition_ticks: u64,
    /// Partitions skipped because another node held their lock.
    pub skipped: u64,
    /// Rows the committed calls changed.
    pub rows_changed: u64,
    /// Calls that failed (an error of the tick or of the database).
    pub errors: u64,
    /// Calls that panicked.
    pub panics: u64,
    /// How long the last finished tick took, all partitions.
    pub last_tick_duration: Option<Duration>,
    /// The last failure, as logged.
    pub last_error: Option<String>,
}

/// The live counters behind a [`ReconcilerStats`].
#[derive(Debug)]
pub(crate) struct Figures {
    pub(crate) name: String,
    pub(crate) interval: Duration,
    ticks: AtomicU64,
    partition_ticks: AtomicU64,
    skipped: AtomicU64,
    rows_changed: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    /// Nanoseconds, `u64::MAX` before the first tick.
    last_tick_nanos: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// How one call of a reconciler's `tick` ended.
pub(crate) enum CallOutcome {
    Changed(u64),
    Skipped,
    Failed(String),
    Panicked(String),
}

impl Figures {
    pub(crate) fn new(name: String, interval: Duration) -> Figures {
        Figures {
            name,
            interval,
            ticks: AtomicU64::new(0),
            partition_ticks: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            rows_changed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            last_tick_nanos: AtomicU64::new(u64::MAX),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn record_call(&self, outcome: &CallOutcome) {
        let add = |counter: &AtomicU64, n: u64| counter.fetch_add(n, Ordering::Relaxed);
        match outcome {
            CallOutcome::Changed(rows) => {
                add(&self.partition_ticks, 1);
                add(&self.rows_changed, *rows);
            }
            CallOutcome::Skipped => {
                add(&self.skipped, 1);
            }
            CallOutcome::Failed(error) => {
                add(&self.errors, 1);
                self.set_last_error(error);
            }
            CallOutcome::Panicked(message) => {
                add(&self.panics, 1);
                self.set_last_error(message);
            }
        }
    }

    pub(crate) fn record_tick(&self, took: Duration) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_tick_nanos.store(nanos, Ordering::Relaxed);
    }

    fn set_last_error(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
    }

    pub(crate) fn snapshot(&self) -> ReconcilerStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let nanos = get(&self.last_tick_nanos);
        ReconcilerStats {
            name: self.name.clone(),
            interval: self.interval,
            ticks: get(&self.ticks),
            partition_ticks: get(&self.partition_ticks),
            skipped: get(&self.skipped),
            rows_changed: get(&self.rows_changed),
            errors: get(&self.errors),
            panics: get(&self.panics),
            last_tick_duration: (nanos != u64::MAX).then(|| Duration::from_nanos(nanos)),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
