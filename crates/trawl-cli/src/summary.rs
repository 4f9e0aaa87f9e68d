//! The human summary printed on stderr after a scan.

use std::io::{self, Write};

use trawl::RunReport;

/// Shows at most this many failed objects; the rest are counted.
const MAX_FAILURES_SHOWN: usize = 20;

/// What `--baseline` held back: findings suppressed, and the baseline's size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Suppressed {
    pub(crate) findings: u64,
    pub(crate) baseline: usize,
}

/// Writes the summary of `report`: what was scanned, how fast, what was
/// found by rule (and held back by a baseline), what was skipped or failed
/// with why, and the errors the store answered with.
pub(crate) fn print(
    report: &RunReport,
    suppressed: Option<Suppressed>,
    out: &mut impl Write,
) -> io::Result<()> {
    let secs = report.elapsed.as_secs_f64();
    let bytes = report.io.payload_bytes_fetched;
    let objects = report.io.objects_completed;
    let per_second = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    writeln!(
        out,
        "trawl: scanned {} of {} objects, {} in {:.2} s ({} objects/s, {}/s)",
        objects,
        report.remote.objects_discovered,
        human_bytes(bytes as f64),
        secs,
        human_rate(per_second(objects)),
        human_bytes(per_second(bytes)),
    )?;
    write!(out, "  findings: {}", report.findings)?;
    if !report.findings_by_rule.is_empty() {
        let mut by_rule: Vec<_> = report.findings_by_rule.iter().collect();
        by_rule.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = by_rule
            .iter()
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect();
        write!(out, " ({})", parts.join(", "))?;
    }
    writeln!(out)?;
    if let Some(s) = suppressed {
        writeln!(
            out,
            "  suppressed by baseline: {} (the baseline holds {} finding(s))",
            s.findings, s.baseline
        )?;
    }
    if report.objects_skipped > 0 {
        writeln!(out, "  skipped: {}", report.objects_skipped)?;
        for (reason, n) in &report.skipped_by_reason {
            writeln!(out, "    {n} {reason}")?;
        }
    }
    if !report.failed.is_empty() {
        writeln!(out, "  failed: {}", report.failed.len())?;
        for failed in report.failed.iter().take(MAX_FAILURES_SHOWN) {
            writeln!(
                out,
                "    {}: {}: {}",
                String::from_utf8_lossy(&failed.display),
                failed.kind,
                failed.message
            )?;
        }
        if report.failed.len() > MAX_FAILURES_SHOWN {
            writeln!(
                out,
                "    … and {} more",
                report.failed.len() - MAX_FAILURES_SHOWN
            )?;
        }
    }
    if let Some(err) = &report.listing_error {
        writeln!(out, "  listing ended early: {err}")?;
    }
    if let Some(err) = &report.sink_error {
        writeln!(out, "  output failed: {err}")?;
    }
    if report.stopped {
        writeln!(out, "  stopped before the end: the scan is incomplete")?;
    }
    // Each class once per error; retries are the attempts made again.
    let io = &report.io;
    let classes = [
        (io.retryable_errors, "retryable"),
        (io.throttled, "throttled"),
        (io.permanent_errors, "permanent"),
    ];
    let mut errors = classes
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, class)| format!("{n} {class}"))
        .collect::<Vec<_>>()
        .join(", ");
    if io.retries > 0 {
        let separator = if errors.is_empty() { "" } else { "; " };
        errors.push_str(&format!("{separator}{} retries", io.retries));
    }
    if !errors.is_empty() {
        writeln!(out, "  errors: {errors}")?;
    }
    Ok(())
}

/// A count per second: one decimal below 10, none above.
fn human_rate(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use trawl::SkipReason;
    use trawl::scheduler::{FailedObject, FailureKind, IoStats, RemoteStats};

    use super::*;

    fn summary(report: &RunReport, suppressed: Option<Suppressed>) -> String {
        let mut out = Vec::new();
        print(report, suppressed, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A scan where everything that can be shown happened.
    fn eventful() -> RunReport {
        let failed = |key: &str, kind, message: &str| FailedObject {
            display: format!("s3://bucket/{key}").into_bytes(),
            kind,
            message: message.into(),
        };
        RunReport {
            remote: RemoteStats {
                objects_discovered: 1206,
                objects_enqueued: 1204,
            },
            io: IoStats {
                objects_started: 1204,
                objects_completed: 1200,
                objects_failed: 3,
                chunks_fetched: 2000,
                payload_bytes_fetched: 3 << 30,
                retryable_errors: 7,
                permanent_errors: 2,
                retries: 6,
                throttled: 4,
            },
            objects_skipped: 3,
            skipped_by_reason: [(SkipReason::Archived, 2), (SkipReason::Stopped, 1)].into(),
            failed: vec![
                failed(
                    "a.log",
                    FailureKind::Permanent,
                    "at offset 0: read s3://bucket/a.log: HTTP 403 AccessDenied: Access Denied",
                ),
                failed(
                    "b.log",
                    FailureKind::RetriesExhausted,
                    "gave up after 4 attempts at offset 4194304: read s3://bucket/b.log: connection reset",
                ),
                failed(
                    "c.log",
                    FailureKind::Permanent,
                    "object changed during scan: s3://bucket/c.log: its ETag no longer matches the listing",
                ),
            ],
            findings: 5,
            findings_by_rule: [
                ("github-pat".to_owned(), 3),
                ("aws-access-token".to_owned(), 2),
            ]
            .into(),
            chunks_scanned: 2000,
            listing_error: Some(
                "listing failed after 4 attempts: list s3://bucket/: HTTP 503".into(),
            ),
            sink_error: None,
            stopped: true,
            elapsed: Duration::from_secs(60),
            buffers_in_use_at_end: 0,
        }
    }

    #[test]
    fn a_quiet_scan_shows_two_lines() {
        let report = RunReport {
            remote: RemoteStats {
                objects_discovered: 9,
                objects_enqueued: 9,
            },
            io: IoStats {
                objects_completed: 9,
                payload_bytes_fetched: 1001,
                ..IoStats::default()
            },
            elapsed: Duration::from_millis(10),
            ..RunReport::default()
        };
        insta::assert_snapshot!(summary(&report, None), @r"
        trawl: scanned 9 of 9 objects, 1001 B in 0.01 s (900 objects/s, 97.8 KiB/s)
          findings: 0
        ");
    }

    #[test]
    fn an_eventful_scan_shows_every_count_and_reason() {
        let suppressed = Suppressed {
            findings: 1,
            baseline: 10,
        };
        insta::assert_snapshot!(summary(&eventful(), Some(suppressed)));
    }

    #[test]
    fn rates_keep_a_decimal_only_when_small() {
        assert_eq!(human_rate(0.25), "0.2");
        assert_eq!(human_rate(1234.5), "1234");
    }

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }
}
