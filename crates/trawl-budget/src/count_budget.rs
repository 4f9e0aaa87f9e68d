//! `CountBudget`: a counted number of permits, such as objects in flight.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::gate::Gate;

/// A budget of `limit` permits.
///
/// The scheduler takes one permit per discovered object and shares it, in an
/// `Arc`, with every chunk of that object: the permit is released when the
/// last holder drops it, that is when the object's last chunk is scanned.
#[derive(Clone)]
pub struct CountBudget {
    inner: Arc<BudgetInner>,
}

struct BudgetInner {
    gate: Gate<usize>,
    limit: usize,
}

impl CountBudget {
    /// A budget of `limit` permits.
    ///
    /// # Panics
    ///
    /// If `limit` is zero: no permit could ever be taken.
    pub fn new(limit: usize) -> Self {
        assert!(limit > 0, "a count budget needs at least one permit");
        CountBudget {
            inner: Arc::new(BudgetInner {
                gate: Gate::new(0),
                limit,
            }),
        }
    }

    /// The number of permits.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// How many permits are held now.
    pub fn in_use(&self) -> usize {
        *self.inner.gate.lock()
    }

    /// Takes a permit, waiting for one if all are held; `None` once `stop`
    /// is set.
    pub fn acquire(&self, stop: &AtomicBool) -> Option<Permit> {
        let limit = self.inner.limit;
        self.inner.gate.wait_for(stop, |used| {
            (*used < limit).then(|| {
                *used += 1;
            })
        })?;
        Some(Permit {
            budget: Arc::clone(&self.inner),
        })
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut used = self.inner.gate.lock();
        if *used >= self.inner.limit {
            return None;
        }
        *used += 1;
        Some(Permit {
            budget: Arc::clone(&self.inner),
        })
    }
}

impl fmt::Debug for CountBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountBudget")
            .field("limit", &self.inner.limit)
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// One permit of a [`CountBudget`], released on drop.
pub struct Permit {
    budget: Arc<BudgetInner>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.gate.release(|used| *used -= 1);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[test]
    fn permits_are_limited_and_released_by_the_last_holder() {
        let budget = CountBudget::new(2);
        let stop = AtomicBool::new(false);
        let a = Arc::new(budget.acquire(&stop).unwrap());
        let a2 = Arc::clone(&a);
        let _b = budget.acquire(&stop).unwrap();
        assert!(budget.try_acquire().is_none());
        drop(a);
        assert!(
            budget.try_acquire().is_none(),
            "a second holder still has it"
        );
        drop(a2);
        assert!(budget.try_acquire().is_some());
    }

    #[test]
    fn acquire_gives_up_when_stopped() {
        let budget = CountBudget::new(1);
        let stop = Arc::new(AtomicBool::new(false));
        let _held = budget.acquire(&stop).unwrap();
        let setter = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                stop.store(true, Ordering::Relaxed);
            })
        };
        assert!(budget.acquire(&stop).is_none());
        setter.join().unwrap();
        assert_eq!(budget.in_use(), 1);
    }
}
