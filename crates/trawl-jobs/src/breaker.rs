//! A circuit breaker per job kind, in each manager: after `failures`
//! failed attempts of a kind in a row, the manager stops claiming that kind
//! for `cool_down`, then lets one job of it through (a probe): if the probe
//! succeeds the breaker closes, if it fails it opens again. Other kinds run
//! on meanwhile, so one broken dependency (a store that is down, an API
//! that rejects every call) does not burn the attempts of every job of its
//! kind, nor the slots the other kinds need.
//!
//! A failed attempt is one the worker ran and that failed: it returned
//! `Retry` or `Fail`, panicked or timed out. A payload that does not
//! deserialize, a cancel, a release or a suspension do not count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a kind's breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failed attempts in a row that open the breaker (at least 1).
    pub failures: u32,
    /// How long an open breaker keeps the kind from being claimed before
    /// it lets one probe through.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    /// 5 failures in a row, 30 s of cool-down.
    fn default() -> BreakerConfig {
        BreakerConfig {
            failures: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// A change of a breaker, to log, count and publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Opened(String),
    Closed(String),
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// Cooled down: the next claim takes one job of the kind (`probing`
    /// once it has one).
    HalfOpen {
        probing: bool,
    },
}

/// The breakers of one manager, by kind.
#[derive(Debug)]
pub(crate) struct Breakers {
    config: Option<BreakerConfig>,
    kinds: Mutex<HashMap<String, State>>,
}

impl Breakers {
    pub(crate) fn new(config: Option<BreakerConfig>) -> Breakers {
        Breakers {
            config,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Notes how an attempt of `kind` ended (`failed`: the worker ran it
    /// and it failed); returns the breaker's change, if any.
    pub(crate) fn record(&self, kind: &str, failed: bool) -> Option<Change> {
        let config = self.config?;
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let state = kinds
            .entry(kind.to_owned())
            .or_insert(State::Closed { failures: 0 });
        match (&mut *state, failed) {
            (State::Closed { failures }, true) => {
                *failures += 1;
                if *failures >= config.failures {
                    *state = State::Open {
                        until: Instant::now() + config.cool_down,
                    };
                    return Some(Change::Opened(kind.to_owned()));
                }
                None
            }
            (State::Closed { failures }, false) => {
                *failures = 0;
                None
            }
            (State::HalfOpen { .. }, true) => {
                *state = State::Open {
                    until: Instant::now() + config.cool_down,
                };
                Some(Change::Opened(kind.to_owned()))
            }
            (State::HalfOpen { .. }, false) => {
                *state = State::Closed { failures: 0 };
                Some(Change::Closed(kind.to_owned()))
            }
            // An attempt claimed before the breaker opened.
            (State::Open { .. }, _) => None,
        }
    }

    /// The kinds a claim must skip (open, or half-open: those go through
    /// probes only), and the kinds due for a probe, each marked as probing.
    pub(crate) fn plan(&self) -> (Vec<String>, Vec<String>) {
        if self.config.is_none() {
            return (Vec::new(), Vec::new());
        }
        let now = Instant::now();
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let (mut skip, mut probe) = (Vec::new(), Vec::new());
        for (kind, state) in kinds.iter_mut() {
            if let State::Open { until } = state
                && *until <= now
            {
                *state = State::HalfOpen { probing: false };
            }
            match state {
                State::Closed { .. } => continue,
                State::HalfOpen { probing } if !*probing => {
                    *probing = true;
                    probe.push(kind.clone());
                }
                _ => {}
            }
            skip.push(kind.clone());
        }
        (skip, probe)
    }

    /// A probe of `kind` found no job: probe again at the next claim.
    pub(crate) fn probe_missed(&self, kind: &str) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(State::HalfOpen { probing }) = kinds.get_mut(kind) {
            *probing = false;
        }
    }

    /// The kinds whose breaker is not closed, sorted.
    pub(crate) fn open(&self) -> Vec<String> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let mut open: Vec<String> = kinds
            .iter()
            .filter(|(_, state)| !matches!(state, State::Closed { .. }))
            .map(|(kind, _)| kind.clone())
            .collect();
        open.sort();
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(cool_down: Duration) -> Breakers {
        Breakers::new(Some(BreakerConfig {
            failures: 3,
            cool_down,
        }))
    }

    #[test]
    fn opens_after_failures_in_a_row_only() {
        let b = breakers(Duration::from_secs(60));
        assert_eq!(b.record("k", true), None);
        assert_eq!(b.record("k", true), None);
        assert_eq!(b.record("k", false), None, "a success resets the count");
        assert_eq!(b.record("k", true), None);
        assert_eq!(b.record("k", true), None);
        assert_eq!(b.record("k", true), Some(Change::Opened("k".into())));
        assert_eq!(
            b.plan(),
            (vec!["k".to_owned()], vec![]),
            "skipped while open"
        );
        assert_eq!(b.open(), ["k"]);
        assert_eq!(b.record("other", true), None, "kinds are apart");
    }

    #[test]
    fn one_probe_after_the_cool_down_closes_or_reopens() {
        let b = breakers(Duration::ZERO);
        for _ in 0..3 {
            b.record("k", true);
        }
        assert_eq!(b.plan(), (vec!["k".to_owned()], vec!["k".to_owned()]));
        assert_eq!(
            b.plan(),
            (vec!["k".to_owned()], vec![]),
            "one probe at a time"
        );
        b.probe_missed("k");
        assert_eq!(b.plan().1, ["k"], "a missed probe is tried again");
        assert_eq!(b.record("k", true), Some(Change::Opened("k".into())));
        assert_eq!(b.plan().1, ["k"]);
        assert_eq!(b.record("k", false), Some(Change::Closed("k".into())));
        assert_eq!(b.plan(), (vec![], vec![]));
        assert!(b.open().is_empty());
    }

    #[test]
    fn without_a_config_nothing_opens() {
        let b = Breakers::new(None);
        for _ in 0..10 {
            assert_eq!(b.record("k", true), None);
        }
        assert_eq!(b.plan(), (vec![], vec![]));
    }
}
