//! The supervisor's settings, and reading them from the environment.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};

/// How the supervisor runs its reconcilers. Every field has a default;
/// set the ones that matter and take the rest from [`Config::default`]:
///
/// ```
/// use std::time::Duration;
/// use trawl_reconcile::Config;
///
/// let config = Config {
///     max_phase: Duration::from_millis(200),
///     ..Config::default()
/// }
/// .with_interval("lease_expiry", Duration::from_secs(1));
/// assert_eq!(config.intervals["lease_expiry"], Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Intervals by reconciler name, in place of the reconciler's own
    /// [`interval`](crate::Reconciler::interval). A name that no
    /// reconciler has is refused by [`spawn_reconcilers`](crate::spawn_reconcilers).
    pub intervals: BTreeMap<String, Duration>,
    /// Time limits of one call by reconciler name, in place of the
    /// reconciler's own [`time_limit`](crate::Reconciler::time_limit); a
    /// name that no reconciler has is refused.
    pub time_limits: BTreeMap<String, Duration>,
    /// The longest random delay before a reconciler's first tick (never
    /// more than its interval), so that the nodes of a fleet started
    /// together spread their ticks. Default 1 s.
    pub max_phase: Duration,
    /// How many times in a row one tick may call a batched reconciler on
    /// the same partition while it keeps returning full batches. Default
    /// 10.
    pub max_batches: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            intervals: BTreeMap::new(),
            time_limits: BTreeMap::new(),
            max_phase: Duration::from_secs(1),
            max_batches: 10,
        }
    }
}

impl Config {
    /// The prefix of the environment variables [`Config::with_env_vars`]
    /// reads.
    pub const ENV_PREFIX: &'static str = "TRAWL_RECONCILE_";

    /// This configuration with `name`'s interval set to `interval`.
    pub fn with_interval(mut self, name: impl Into<String>, interval: Duration) -> Config {
        self.intervals.insert(name.into(), interval);
        self
    }

    /// This configuration with the time limit of one of `name`'s calls set
    /// to `limit`.
    pub fn with_time_limit(mut self, name: impl Into<String>, limit: Duration) -> Config {
        self.time_limits.insert(name.into(), limit);
        self
    }

    /// This configuration with the settings of the process environment
    /// (see [`Config::with_env_vars`]).
    pub fn with_env(self) -> Result<Config> {
        self.with_env_vars(
            std::env::vars_os().filter_map(|(key, value)| {
                Some((key.into_string().ok()?, value.into_string().ok()?))
            }),
        )
    }

    /// This configuration with the settings of `vars` (name, value) whose
    /// names start with [`Config::ENV_PREFIX`]; the others are ignored.
    ///
    /// - `TRAWL_RECONCILE_<NAME>_INTERVAL`: the interval of reconciler
    ///   `<name>` (lower-cased), a duration as [`parse_duration`] reads it;
    /// - `TRAWL_RECONCILE_<NAME>_TIME_LIMIT`: the time limit of one of its
    ///   calls, likewise;
    /// - `TRAWL_RECONCILE_MAX_PHASE`: [`Config::max_phase`];
    /// - `TRAWL_RECONCILE_MAX_BATCHES`: [`Config::max_batches`].
    ///
    /// Any other variable with the prefix, and any value that does not
    /// parse, is an error naming the variable.
    ///
    /// ```
    /// use std::time::Duration;
    /// use trawl_reconcile::Config;
    ///
    /// let vars = [("TRAWL_RECONCILE_LEASE_EXPIRY_INTERVAL", "500ms"), ("HOME", "/root")];
    /// let config = Config::default()
    ///     .with_env_vars(vars.map(|(k, v)| (k.to_owned(), v.to_owned())))
    ///     .unwrap();
    /// assert_eq!(config.intervals["lease_expiry"], Duration::from_millis(500));
    ///
    /// let typo = [("TRAWL_RECONCILE_LEASE_EXPIRY", "5s")];
    /// let err = Config::default()
    ///     .with_env_vars(typo.map(|(k, v)| (k.to_owned(), v.to_owned())))
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("TRAWL_RECONCILE_LEASE_EXPIRY"));
    /// ```
    pub fn with_env_vars(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(key, _)| key.starts_with(Config::ENV_PREFIX))
            .collect();
        vars.sort();
        for (key, value) in vars {
            let setting = &key[Config::ENV_PREFIX.len()..];
            match setting {
                "MAX_PHASE" => self.max_phase = parse_duration(&value).map_err(at(&key))?,
                "MAX_BATCHES" => {
                    self.max_batches =
                        value
                            .trim()
                            .parse()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| {
                                Error::invalid(
                                    &key,
                                    format!("'{value}' is not a whole number above 0"),
                                )
                            })?;
                }
                _ => {
                    let by_name = if let Some(name) = setting.strip_suffix("_INTERVAL") {
                        Some((name, &mut self.intervals))
                    } else {
                        setting
                            .strip_suffix("_TIME_LIMIT")
                            .map(|name| (name, &mut self.time_limits))
                    };
                    let Some((name, map)) = by_name.filter(|(name, _)| !name.is_empty()) else {
                        return Err(Error::invalid(
                            &key,
                            format!(
                                "unknown setting; the variables are {p}<NAME>_INTERVAL, {p}<NAME>_TIME_LIMIT, {p}MAX_PHASE and {p}MAX_BATCHES",
                                p = Config::ENV_PREFIX
                            ),
                        ));
                    };
                    let duration = parse_duration(&value).map_err(at(&key))?;
                    map.insert(name.to_ascii_lowercase(), duration);
                }
            }
        }
        Ok(self)
    }
}

/// Re-targets a value error at the variable that held it.
fn at(key: &str) -> impl Fn(Error) -> Error + '_ {
    move |err| match err {
        Error::Invalid { reason, .. } => Error::invalid(key, reason),
        other => other,
    }
}

/// Reads a duration: a number and a unit, `ms`, `s`, `m` or `h` (`250ms`,
/// `1.5s`, `2m`); a bare number is seconds. Zero, negative and unparsable
/// values are refused: a reconciler that ticks without pause is a bug.
///
/// ```
/// use std::time::Duration;
/// use trawl_reconcile::parse_duration;
///
/// assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
/// assert!(parse_duration("0s").is_err());
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    let seconds = number.parse::<f64>().map(|n| n * scale);
    match seconds {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 => {
            Ok(Duration::from_secs_f64(seconds))
        }
        _ => Err(Error::invalid(
            "duration",
            format!("'{text}' is not a duration above zero such as 250ms, 5s, 2m or 1h"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration(" 30s ").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("5 ms").unwrap(), Duration::from_millis(5));
        for bad in ["", "ms", "-1s", "1d", "1.2.3s", "0", "0ms", "1e400"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
    }

    #[test]
    fn the_environment_sets_intervals_time_limits_phase_and_batches() {
        let config = Config::default()
            .with_env_vars(vars(&[
                ("TRAWL_RECONCILE_WORKER_REGISTRY_TTL_SWEEP_INTERVAL", "10s"),
                ("TRAWL_RECONCILE_MAX_PHASE", "100ms"),
                ("TRAWL_RECONCILE_MAX_BATCHES", "3"),
                ("TRAWL_RECONCILE_MAINTENANCE_TIME_LIMIT", "2h"),
                ("TRAWL_OTHER", "ignored"),
            ]))
            .unwrap();
        assert_eq!(config.time_limits["maintenance"], Duration::from_secs(7200));
        assert_eq!(
            config.intervals["worker_registry_ttl_sweep"],
            Duration::from_secs(10)
        );
        assert_eq!(config.max_phase, Duration::from_millis(100));
        assert_eq!(config.max_batches, 3);
    }

    #[test]
    fn a_bad_variable_is_named_in_the_error() {
        for (key, value, says) in [
            ("TRAWL_RECONCILE_LEASE_EXPIRY_INTERVAL", "fast", "'fast'"),
            ("TRAWL_RECONCILE_MAX_BATCHES", "0", "above 0"),
            ("TRAWL_RECONCILE_INTERVAL", "5s", "unknown setting"),
            ("TRAWL_RECONCILE_LEASE_EXPIRY", "5s", "unknown setting"),
            ("TRAWL_RECONCILE_TIME_LIMIT", "5s", "unknown setting"),
            ("TRAWL_RECONCILE_VACUUM_TIME_LIMIT", "0s", "above zero"),
        ] {
            let err = Config::default()
                .with_env_vars(vars(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains(says),
                "{key}={value}: {err}"
            );
        }
    }
}
