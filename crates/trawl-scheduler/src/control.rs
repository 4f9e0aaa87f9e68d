//! `ScanControl`: stopping a running scan and watching its progress.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::report::{Counters, Progress};

/// The handle to one scan, shared with whoever may stop it (a Ctrl-C
/// handler, a job's cancel) or show its progress. Use a fresh control for
/// each scan: its counts are the scan's.
///
/// ```
/// use trawl_scheduler::ScanControl;
///
/// let control = ScanControl::new();
/// assert!(!control.is_stopped());
/// control.stop();
/// assert!(control.is_stopped());
/// assert_eq!(control.progress().objects_done, 0);
/// ```
#[derive(Debug, Default)]
pub struct ScanControl {
    pub(crate) stop: AtomicBool,
    pub(crate) counters: Counters,
}

impl ScanControl {
    /// A control for a scan not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the scan to stop: it finishes within a bounded time, with a
    /// report that adds up.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked for (or the scan stopped itself).
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The counts so far.
    pub fn progress(&self) -> Progress {
        self.counters.progress()
    }
}
