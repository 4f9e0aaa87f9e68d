//! Retry policy: capped exponential backoff with jitter, and a time budget.
//!
//! Internal crate of trawl (its API follows the needs of `trawl-scheduler`
//! and `trawl-jobs`).
//!
//! Both the number of attempts and the elapsed time are capped: attempts
//! alone let a slow store hold one object for `attempts × timeout`; time
//! alone lets a fast-failing store burn through thousands of requests. The
//! random source is an explicit, seeded [`Rng`], so a run with the same seed
//! sleeps the same delays and tests are reproducible.
//!
//! ```
//! use std::time::Duration;
//! use trawl_retry::{RetryPolicy, Rng};
//!
//! let policy = RetryPolicy::default();
//! let mut rng = Rng::new(7);
//! // The delay before the second attempt: 50 ms ± 20 %.
//! let d = policy.backoff(1, &mut rng);
//! assert!(d >= Duration::from_millis(40) && d <= Duration::from_millis(60));
//! ```

use std::time::{Duration, Instant};

/// Why a [`RetryPolicy`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field has a value the policy cannot work with.
    #[error("invalid retry policy: `{field}` {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// How often and how patiently to retry a failing operation.
///
/// Attempt `n` (1-based) that fails is followed by a wait of
/// `base_delay · 2^(n-1)`, capped at `max_delay`, then moved uniformly within
/// ±`jitter_pct` % of itself, so that many clients failing together do not
/// retry in lock-step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (so 4 means 3 retries).
    pub max_attempts: u32,
    /// The wait after the first failed attempt.
    pub base_delay: Duration,
    /// The longest wait between two attempts, before jitter.
    pub max_delay: Duration,
    /// Jitter as a percentage of the delay, 0..=100.
    pub jitter_pct: u32,
}

impl Default for RetryPolicy {
    /// 4 attempts, 50 ms base delay, 2 s maximum, 20 % jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            jitter_pct: 20,
        }
    }
}

impl RetryPolicy {
    /// Checks that the policy can be used: at least one attempt, jitter at
    /// most 100 %, a base delay no longer than the maximum.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_attempts == 0 {
            return Err(Error::Invalid {
                field: "max_attempts",
                reason: "must be at least 1",
            });
        }
        if self.jitter_pct > 100 {
            return Err(Error::Invalid {
                field: "jitter_pct",
                reason: "must be at most 100",
            });
        }
        if self.base_delay > self.max_delay {
            return Err(Error::Invalid {
                field: "base_delay",
                reason: "must not exceed max_delay",
            });
        }
        Ok(())
    }

    /// The delay before the cap and jitter after failed attempt `attempt`
    /// (1-based): `base_delay · 2^(attempt-1)`, at most `max_delay`.
    pub fn raw_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        self.base_delay
            .checked_mul(1u32 << exponent)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }

    /// The wait after failed attempt `attempt` (1-based), jitter applied:
    /// uniform in `[d - j, d + j]` with `d = raw_delay(attempt)` and
    /// `j = d · jitter_pct / 100`.
    pub fn backoff(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let delay = self.raw_delay(attempt);
        let jitter = delay.as_nanos() * u128::from(self.jitter_pct.min(100)) / 100;
        if jitter == 0 {
            return delay;
        }
        let span = jitter * 2 + 1;
        let offset = u128::from(rng.next_u64()) % span;
        let nanos = delay.as_nanos() + offset - jitter;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Whether another attempt may follow failed attempt `attempt`.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

/// A per-item time budget: the total time an item (an object, a job) may
/// take, retries and waits included.
#[derive(Debug, Clone, Copy)]
pub struct TimeBudget {
    deadline: Option<Instant>,
}

impl TimeBudget {
    /// A budget of `limit` from `start`; `None` never runs out.
    pub fn new(start: Instant, limit: Option<Duration>) -> Self {
        TimeBudget {
            deadline: limit.and_then(|l| start.checked_add(l)),
        }
    }

    /// A budget that never runs out.
    pub fn unlimited() -> Self {
        TimeBudget { deadline: None }
    }

    /// Whether the budget has run out at `now`.
    pub fn is_exhausted(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// Whether waiting `wait` from `now` would pass the budget, in which case
    /// the caller should fail now instead of sleeping first.
    pub fn allows_wait(&self, now: Instant, wait: Duration) -> bool {
        match self.deadline {
            None => true,
            Some(d) => now.checked_add(wait).is_some_and(|end| end < d),
        }
    }

    /// Whether the budget is limited at all.
    pub fn is_limited(&self) -> bool {
        self.deadline.is_some()
    }
}

/// A small, seeded, non-cryptographic random source (xorshift64*), so that
/// jitter is reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        // SplitMix64 step: spreads nearby seeds and avoids the all-zero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng { state: z | 1 }
    }

    /// The next pseudo-random value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, proptest};

    #[test]
    fn default_is_the_seed_policy() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 4);
        assert_eq!(p.base_delay, Duration::from_millis(50));
        assert_eq!(p.max_delay, Duration::from_secs(2));
        assert_eq!(p.jitter_pct, 20);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn backoff_respects_max_delay() {
        let p = RetryPolicy {
            jitter_pct: 0,
            ..RetryPolicy::default()
        };
        let mut rng = Rng::new(1);
        assert_eq!(p.backoff(1, &mut rng), Duration::from_millis(50));
        assert_eq!(p.backoff(2, &mut rng), Duration::from_millis(100));
        assert_eq!(p.backoff(3, &mut rng), Duration::from_millis(200));
        assert_eq!(p.backoff(6, &mut rng), Duration::from_millis(1600));
        for attempt in 7..200 {
            assert_eq!(p.backoff(attempt, &mut rng), Duration::from_secs(2));
        }
    }

    #[test]
    fn backoff_applies_jitter() {
        let p = RetryPolicy::default();
        let mut rng = Rng::new(42);
        let delays: Vec<Duration> = (0..64).map(|_| p.backoff(3, &mut rng)).collect();
        let lo = Duration::from_millis(160);
        let hi = Duration::from_millis(240);
        assert!(delays.iter().all(|d| *d >= lo && *d <= hi), "{delays:?}");
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 32,
            "jitter should spread delays: {delays:?}"
        );
    }

    #[test]
    fn same_seed_same_delays() {
        let p = RetryPolicy::default();
        let (mut a, mut b) = (Rng::new(9), Rng::new(9));
        for attempt in 1..10 {
            assert_eq!(p.backoff(attempt, &mut a), p.backoff(attempt, &mut b));
        }
    }

    #[test]
    fn validate_rejects_bad_fields() {
        let zero = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("max_attempts")
        );
        let jitter = RetryPolicy {
            jitter_pct: 101,
            ..RetryPolicy::default()
        };
        assert!(
            jitter
                .validate()
                .unwrap_err()
                .to_string()
                .contains("jitter_pct")
        );
    }

    #[test]
    fn time_budget_refuses_waits_past_deadline() {
        let start = Instant::now();
        let budget = TimeBudget::new(start, Some(Duration::from_millis(100)));
        assert!(budget.allows_wait(start, Duration::from_millis(50)));
        assert!(!budget.allows_wait(start, Duration::from_millis(100)));
        assert!(budget.is_exhausted(start + Duration::from_millis(100)));
        assert!(TimeBudget::unlimited().allows_wait(start, Duration::MAX));
    }

    proptest! {
        #[test]
        fn backoff_is_within_bounds(
            attempt in 1u32..64,
            base_ms in 1u64..1_000,
            extra_ms in 0u64..10_000,
            jitter_pct in 0u32..=100,
            seed: u64,
        ) {
            let p = RetryPolicy {
                max_attempts: 10,
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_millis(base_ms + extra_ms),
                jitter_pct,
            };
            let raw = p.raw_delay(attempt);
            prop_assert!(raw <= p.max_delay);
            prop_assert!(raw >= p.base_delay);
            let d = p.backoff(attempt, &mut Rng::new(seed));
            let j = raw * jitter_pct / 100;
            prop_assert!(d >= raw - j && d <= raw + j + Duration::from_nanos(1));
        }
    }
}
