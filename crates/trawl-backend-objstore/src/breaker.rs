//! A circuit breaker per endpoint.
//!
//! Without one, an endpoint that fails every request turns the I/O pool
//! into a retry storm: every I/O thread retries every object, each retry a
//! request against a server that is already down. After
//! [`BreakerConfig::failures`] consecutive transient failures the breaker
//! *opens*: calls fail at once, for [`BreakerConfig::cool_down`], with an
//! error classified as a throttle that carries the remaining cool-down, so
//! the scheduler sleeps it out without holding a buffer. Then it is
//! *half-open*: one call (the probe) goes through; its success closes the
//! breaker, its failure opens it again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the breaker. 0 disables it.
    pub failures: u32,
    /// How long an open breaker refuses calls before a probe.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    /// Opens after 8 consecutive failures, for 5 seconds: a few objects'
    /// worth of retries, short enough not to matter to a long scan.
    fn default() -> Self {
        BreakerConfig {
            failures: 8,
            cool_down: Duration::from_secs(5),
        }
    }
}

/// What the breaker's state changes have been so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerStats {
    /// Times the breaker opened.
    pub opened: u64,
    /// Times a probe succeeded and closed it again.
    pub closed: u64,
    /// Calls refused while it was open.
    pub rejected: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_started: Instant },
}

/// The breaker of one endpoint; shared by every thread that calls it.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    endpoint: String,
    config: BreakerConfig,
    state: Mutex<State>,
    opened: AtomicU64,
    closed: AtomicU64,
    rejected: AtomicU64,
}

impl CircuitBreaker {
    pub(crate) fn new(endpoint: String, config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            endpoint,
            config,
            state: Mutex::new(State::Closed {
                consecutive_failures: 0,
            }),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Lets a call through, or says how long the breaker stays open.
    pub(crate) fn admit(&self, now: Instant) -> Result<(), Duration> {
        if self.config.failures == 0 {
            return Ok(());
        }
        let mut state = self.lock();
        let refused = match *state {
            State::Closed { .. } => return Ok(()),
            State::Open { until } if now >= until => {
                tracing::info!(endpoint = %self.endpoint, "circuit breaker half-open: probing");
                *state = State::HalfOpen { probe_started: now };
                return Ok(());
            }
            State::Open { until } => until - now,
            // A probe that never reports back (its thread was stopped) must
            // not keep the breaker half-open forever.
            State::HalfOpen { probe_started }
                if now - probe_started > self.config.cool_down * 4 =>
            {
                *state = State::HalfOpen { probe_started: now };
                return Ok(());
            }
            // While the probe is out, the others wait a short while.
            State::HalfOpen { .. } => self.config.cool_down.min(Duration::from_millis(200)),
        };
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Err(refused)
    }

    /// Records the outcome of an admitted call: `failed` for a transient
    /// failure of the endpoint (see `Error::is_endpoint_failure`).
    pub(crate) fn record(&self, failed: bool, now: Instant) {
        if self.config.failures == 0 {
            return;
        }
        let mut state = self.lock();
        *state = match (*state, failed) {
            (State::HalfOpen { .. }, false) => {
                tracing::info!(endpoint = %self.endpoint, "circuit breaker closed: the endpoint answers again");
                self.closed.fetch_add(1, Ordering::Relaxed);
                State::Closed {
                    consecutive_failures: 0,
                }
            }
            (State::HalfOpen { .. }, true) => self.open(now),
            (State::Closed { .. }, false) => State::Closed {
                consecutive_failures: 0,
            },
            (
                State::Closed {
                    consecutive_failures,
                },
                true,
            ) => {
                let consecutive_failures = consecutive_failures + 1;
                if consecutive_failures >= self.config.failures {
                    self.open(now)
                } else {
                    State::Closed {
                        consecutive_failures,
                    }
                }
            }
            // Calls admitted before the breaker opened report late: the
            // open state stands.
            (open @ State::Open { .. }, _) => open,
        };
    }

    pub(crate) fn stats(&self) -> BreakerStats {
        BreakerStats {
            opened: self.opened.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn open(&self, now: Instant) -> State {
        tracing::warn!(
            endpoint = %self.endpoint,
            cool_down = ?self.config.cool_down,
            "circuit breaker open: the endpoint keeps failing, pausing calls"
        );
        self.opened.fetch_add(1, Ordering::Relaxed);
        State::Open {
            until: now + self.config.cool_down,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, valid even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32) -> CircuitBreaker {
        CircuitBreaker::new(
            "http://127.0.0.1:1".into(),
            BreakerConfig {
                failures,
                cool_down: Duration::from_secs(10),
            },
        )
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3);
        let t = Instant::now();
        for _ in 0..2 {
            b.admit(t).unwrap();
            b.record(true, t);
        }
        b.record(false, t); // a success in between resets the count
        for _ in 0..2 {
            b.record(true, t);
        }
        assert!(b.admit(t).is_ok());
        b.record(true, t);
        let remaining = b.admit(t + Duration::from_secs(4)).unwrap_err();
        assert_eq!(remaining, Duration::from_secs(6));
        assert_eq!(b.stats().opened, 1);
        assert_eq!(b.stats().rejected, 1);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let b = breaker(1);
        let t = Instant::now();
        b.record(true, t);
        let later = t + Duration::from_secs(10);
        assert!(b.admit(later).is_ok(), "the probe");
        assert!(b.admit(later).is_err(), "others wait for the probe");
        b.record(false, later);
        assert!(b.admit(later).is_ok());
        assert_eq!(
            b.stats(),
            BreakerStats {
                opened: 1,
                closed: 1,
                rejected: 1
            }
        );
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let b = breaker(1);
        let t = Instant::now();
        b.record(true, t);
        let later = t + Duration::from_secs(10);
        b.admit(later).unwrap();
        b.record(true, later);
        assert_eq!(b.admit(later).unwrap_err(), Duration::from_secs(10));
        assert_eq!(b.stats().opened, 2);
    }

    #[test]
    fn zero_failures_disables_it() {
        let b = breaker(0);
        let t = Instant::now();
        for _ in 0..100 {
            b.record(true, t);
        }
        assert!(b.admit(t).is_ok());
    }
}
