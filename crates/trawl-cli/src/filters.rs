//! The values of `trawl scan`'s filter flags (`--include`, `--exclude`,
//! `--max-object-size`, `--modified-since`) and the [`ObjectFilter`] they
//! make, the same for local paths and URLs (docs/filters.md).

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate};
use trawl::backend::{ObjectFilter, PathGlob};

/// The filter flags as parsed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filters<'a> {
    pub(crate) include: &'a [PathGlob],
    pub(crate) exclude: &'a [PathGlob],
    pub(crate) max_object_size: Option<usize>,
    pub(crate) modified_since: Option<SystemTime>,
}

impl Filters<'_> {
    /// The filter the backends apply.
    pub(crate) fn build(self) -> Result<ObjectFilter> {
        let mut builder = ObjectFilter::builder();
        for glob in self.include {
            builder = builder.include(glob.clone());
        }
        for glob in self.exclude {
            builder = builder.exclude(glob.clone());
        }
        if let Some(size) = self.max_object_size {
            builder = builder.max_size(size as u64);
        }
        if let Some(cutoff) = self.modified_since {
            builder = builder.modified_since(cutoff);
        }
        builder.build().context("invalid --include or --exclude")
    }
}

/// A glob of `--include` or `--exclude`; clap names the flag and the value
/// around the reason.
pub(crate) fn parse_glob(text: &str) -> Result<PathGlob, String> {
    PathGlob::new(text).map_err(|err| match err {
        trawl::backend::Error::InvalidGlob { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// The cut-off of `--modified-since`: an RFC 3339 date and time, a date
/// (midnight UTC), or an age counted back from now.
pub(crate) fn parse_when(text: &str) -> Result<SystemTime, String> {
    parse_when_at(text, SystemTime::now())
}

const WHEN_FORMATS: &str = "expected a date and time (2026-01-31T08:00:00Z, \
     2026-01-31T09:00:00+01:00), a date (2026-01-31, from midnight UTC) or an age \
     (30m, 12h, 7d, 2w: that long before now)";

fn parse_when_at(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    if let Some(age) = parse_age(text)? {
        return now
            .checked_sub(age)
            .ok_or_else(|| "the age reaches before the clock's start".to_owned());
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.into());
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        return Ok(midnight.and_utc().into());
    }
    if text.contains(['T', 't', ' ']) && text.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "a date and time needs its offset from UTC (Z, +01:00): {WHEN_FORMATS}"
        ));
    }
    Err(WHEN_FORMATS.to_owned())
}

/// `7d`, `12h`, `30m`, `45s`, `2w`; `None` when `text` is not digits and a
/// unit (a date, most likely).
fn parse_age(text: &str) -> Result<Option<Duration>, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || !unit.chars().all(|c| c.is_ascii_alphabetic()) || unit.is_empty() {
        return Ok(None);
    }
    let seconds = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' of an age (use s, m, h, d or w: 30m, 12h, 7d)"
            ));
        }
    };
    let count: u64 = digits.parse().map_err(|_| "the age is too large")?;
    count
        .checked_mul(seconds)
        .map(|secs| Some(Duration::from_secs(secs)))
        .ok_or_else(|| "the age is too large".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn ages_count_back_from_now() {
        let now = at(1_767_225_600);
        for (text, back) in [
            ("7d", 7 * DAY),
            ("12h", Duration::from_secs(12 * 3600)),
            ("30m", Duration::from_secs(1800)),
            ("45s", Duration::from_secs(45)),
            ("2w", 14 * DAY),
            (" 1d ", DAY),
            ("0d", Duration::ZERO),
        ] {
            assert_eq!(parse_when_at(text, now), Ok(now - back), "{text}");
        }
        let err = parse_when_at("3y", now).unwrap_err();
        assert!(err.contains("unknown unit 'y'"), "{err}");
        let err = parse_when_at("99999999999999999999d", now).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn dates_and_times_are_absolute() {
        let now = SystemTime::now();
        let jan_31 = at(1_769_817_600);
        assert_eq!(parse_when_at("2026-01-31", now), Ok(jan_31));
        assert_eq!(parse_when_at("2026-01-31T00:00:00Z", now), Ok(jan_31));
        assert_eq!(
            parse_when_at("2026-01-31T09:30:00+01:00", now),
            Ok(jan_31 + Duration::from_secs(8 * 3600 + 1800))
        );
        let err = parse_when_at("2026-01-31T09:30:00", now).unwrap_err();
        assert!(err.contains("offset from UTC"), "{err}");
        for bad in ["yesterday", "2026-13-01", "31/01/2026", ""] {
            let err = parse_when_at(bad, now).unwrap_err();
            assert!(err.contains("expected a date and time"), "{bad}: {err}");
        }
    }

    #[test]
    fn globs_are_checked_when_parsed() {
        assert_eq!(parse_glob("*.rs").unwrap().as_str(), "*.rs");
        let err = parse_glob("src/[a").unwrap_err();
        assert!(err.contains("unclosed character class"), "{err}");
        assert!(!err.contains("src/[a"), "clap shows the value: {err}");
    }

    #[test]
    fn the_flags_make_one_filter() {
        let include = [parse_glob("*.js").unwrap()];
        let exclude = [parse_glob("node_modules/").unwrap()];
        let filter = Filters {
            include: &include,
            exclude: &exclude,
            max_object_size: Some(1 << 20),
            modified_since: Some(at(0)),
        }
        .build()
        .unwrap();
        assert_eq!(filter.include_globs(), include);
        assert_eq!(filter.exclude_globs(), exclude);
        assert_eq!(filter.max_size(), Some(1 << 20));
        assert_eq!(filter.modified_since(), Some(at(0)));
    }
}
