//! `RunReport`: what a scan did, adding up to every object it discovered.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use trawl_backend::SkipReason;

/// Counts from the discovery thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Objects the listing returned or reported as skipped.
    pub objects_discovered: u64,
    /// Objects handed to the I/O threads.
    pub objects_enqueued: u64,
}

/// Counts from the I/O threads and CPU workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Objects an I/O thread started to fetch.
    pub objects_started: u64,
    /// Objects whose every chunk was fetched and scanned.
    pub objects_completed: u64,
    /// Objects that failed (see [`RunReport::failed`]).
    pub objects_failed: u64,
    /// Chunks fetched successfully.
    pub chunks_fetched: u64,
    /// Bytes fetched, the overlap excluded.
    pub payload_bytes_fetched: u64,
    /// Fetch or list errors classified retryable.
    pub retryable_errors: u64,
    /// Fetch or list errors classified permanent (contract violations
    /// included).
    pub permanent_errors: u64,
    /// Retries made after retryable errors.
    pub retries: u64,
    /// Waits made after throttling errors.
    pub throttled: u64,
}

/// Why an object failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FailureKind {
    /// The backend reported a permanent error.
    Permanent,
    /// Retryable errors used up every attempt.
    RetriesExhausted,
    /// The per-object time budget ran out.
    TimeBudgetExceeded,
    /// The backend broke the `fetch_range` contract (a short read).
    ContractViolation,
    /// A bug: the backend or the engine panicked on this object.
    Internal,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Permanent => "permanent error",
            FailureKind::RetriesExhausted => "retries exhausted",
            FailureKind::TimeBudgetExceeded => "time budget exceeded",
            FailureKind::ContractViolation => "backend contract violation",
            FailureKind::Internal => "internal error",
        })
    }
}

/// An object that could not be scanned completely. Findings from the chunks
/// scanned before the failure were delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedObject {
    /// The object's path or URL.
    pub display: Vec<u8>,
    /// The class of failure.
    pub kind: FailureKind,
    /// What happened, in words (never a credential).
    pub message: String,
}

/// The outcome of a scan. It always adds up:
/// `objects_discovered = objects_completed + objects_failed + objects_skipped`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// Discovery counts.
    pub remote: RemoteStats,
    /// I/O and scanning counts.
    pub io: IoStats,
    /// Objects not scanned, for any reason.
    pub objects_skipped: u64,
    /// Skipped objects by reason.
    pub skipped_by_reason: BTreeMap<SkipReason, u64>,
    /// Failed objects with their class and message.
    pub failed: Vec<FailedObject>,
    /// Findings delivered to the sink.
    pub findings: u64,
    /// Findings by rule id.
    pub findings_by_rule: BTreeMap<String, u64>,
    /// Chunks scanned by the engine.
    pub chunks_scanned: u64,
    /// Why the listing ended early, if it did: the scan is then incomplete.
    pub listing_error: Option<String>,
    /// Why the sink stopped accepting findings, if it did.
    pub sink_error: Option<String>,
    /// Whether the scan was stopped before it finished.
    pub stopped: bool,
    /// Wall time of the scan.
    pub elapsed: Duration,
    /// Pooled buffers still taken when every thread had ended: always 0
    /// unless a buffer leaked (tests check it under injected faults).
    pub buffers_in_use_at_end: usize,
}

impl RunReport {
    /// Whether every discovered object was scanned to its end: nothing
    /// failed or was cut short, and the listing and the sink did not fail.
    /// Objects skipped on purpose (hidden files on request…) do not make a
    /// scan incomplete, but objects skipped because of a stop do.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
            && self.listing_error.is_none()
            && self.sink_error.is_none()
            && !self.stopped
    }

    /// Whether the accounting identity holds.
    pub fn adds_up(&self) -> bool {
        self.remote.objects_discovered
            == self.io.objects_completed + self.io.objects_failed + self.objects_skipped
    }
}

/// Live counters shared by the pipeline's threads, snapshotted into a
/// [`RunReport`] at the end.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) objects_discovered: AtomicU64,
    pub(crate) objects_enqueued: AtomicU64,
    pub(crate) objects_started: AtomicU64,
    pub(crate) objects_completed: AtomicU64,
    pub(crate) objects_failed: AtomicU64,
    pub(crate) objects_skipped: AtomicU64,
    pub(crate) chunks_fetched: AtomicU64,
    pub(crate) chunks_scanned: AtomicU64,
    pub(crate) payload_bytes_fetched: AtomicU64,
    pub(crate) retryable_errors: AtomicU64,
    pub(crate) permanent_errors: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) findings: AtomicU64,
    pub(crate) skipped_by_reason: Mutex<BTreeMap<SkipReason, u64>>,
    pub(crate) failed: Mutex<Vec<FailedObject>>,
}

/// A live view of a running scan's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Objects discovered so far.
    pub objects_discovered: u64,
    /// Objects ended so far (completed, failed or skipped).
    pub objects_done: u64,
    /// Payload bytes fetched so far.
    pub bytes_fetched: u64,
    /// Findings so far.
    pub findings: u64,
    /// Objects failed so far.
    pub objects_failed: u64,
    /// Retries and throttled waits so far.
    pub retries: u64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Counters {
    pub(crate) fn progress(&self) -> Progress {
        Progress {
            objects_discovered: get(&self.objects_discovered),
            objects_done: get(&self.objects_completed)
                + get(&self.objects_failed)
                + get(&self.objects_skipped),
            bytes_fetched: get(&self.payload_bytes_fetched),
            findings: get(&self.findings),
            objects_failed: get(&self.objects_failed),
            retries: get(&self.retries) + get(&self.throttled),
        }
    }

    pub(crate) fn skip(&self, reason: SkipReason) {
        bump(&self.objects_skipped);
        *lock(&self.skipped_by_reason).entry(reason).or_default() += 1;
    }

    pub(crate) fn fail(&self, object: &[u8], kind: FailureKind, message: String) {
        bump(&self.objects_failed);
        if matches!(
            kind,
            FailureKind::Permanent | FailureKind::ContractViolation
        ) {
            bump(&self.permanent_errors);
        }
        tracing::warn!(
            object = %String::from_utf8_lossy(object),
            %kind,
            %message,
            "object failed"
        );
        lock(&self.failed).push(FailedObject {
            display: object.to_vec(),
            kind,
            message,
        });
    }

    pub(crate) fn snapshot(&self) -> RunReport {
        RunReport {
            remote: RemoteStats {
                objects_discovered: get(&self.objects_discovered),
                objects_enqueued: get(&self.objects_enqueued),
            },
            io: IoStats {
                objects_started: get(&self.objects_started),
                objects_completed: get(&self.objects_completed),
                objects_failed: get(&self.objects_failed),
                chunks_fetched: get(&self.chunks_fetched),
                payload_bytes_fetched: get(&self.payload_bytes_fetched),
                retryable_errors: get(&self.retryable_errors),
                permanent_errors: get(&self.permanent_errors),
                retries: get(&self.retries),
                throttled: get(&self.throttled),
            },
            objects_skipped: get(&self.objects_skipped),
            skipped_by_reason: lock(&self.skipped_by_reason).clone(),
            failed: lock(&self.failed).clone(),
            findings: get(&self.findings),
            chunks_scanned: get(&self.chunks_scanned),
            ..RunReport::default()
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps are only ever appended to; a panic elsewhere cannot
    // leave them half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
