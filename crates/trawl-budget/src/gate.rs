//! The blocking wait shared by both budgets: spin briefly, then park with a
//! short timeout, and give up when the stop flag is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Tries before parking: most waits in a busy pipeline end within a few
/// hundred spins, and parking costs a syscall on both sides.
const SPINS: u32 = 200;
/// How long one park lasts before the stop flag is checked again.
const PARK: Duration = Duration::from_micros(200);

/// A mutex-protected state with a condition variable signalled on release.
#[derive(Debug, Default)]
pub(crate) struct Gate<T> {
    state: Mutex<T>,
    released: Condvar,
}

impl<T> Gate<T> {
    pub(crate) fn new(state: T) -> Self {
        Gate {
            state: Mutex::new(state),
            released: Condvar::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        // A panic while holding this lock cannot leave the plain counters and
        // free lists inside in a broken state, so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `take` under the lock until it returns `Some`, or until `stop`
    /// is set (then `None`).
    pub(crate) fn wait_for<R>(
        &self,
        stop: &AtomicBool,
        mut take: impl FnMut(&mut T) -> Option<R>,
    ) -> Option<R> {
        for _ in 0..SPINS {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if let Ok(mut state) = self.state.try_lock()
                && let Some(r) = take(&mut state)
            {
                return Some(r);
            }
            std::hint::spin_loop();
        }
        let mut state = self.lock();
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(r) = take(&mut state) {
                return Some(r);
            }
            state = self
                .released
                .wait_timeout(state, PARK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Changes the state and wakes one waiter.
    pub(crate) fn release(&self, give: impl FnOnce(&mut T)) {
        give(&mut self.lock());
        self.released.notify_one();
    }
}
