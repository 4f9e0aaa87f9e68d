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
/// found by rule (and held back by a baseline), and what was skipped or
/// failed with why.
pub(crate) fn print(
    report: &RunReport,
    suppressed: Option<Suppressed>,
    out: &mut impl Write,
) -> io::Result<()> {
    let secs = report.elapsed.as_secs_f64();
    let bytes = report.io.payload_bytes_fetched;
    let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
    writeln!(
        out,
        "trawl: scanned {} of {} objects, {} in {:.2} s ({}/s)",
        report.io.objects_completed,
        report.remote.objects_discovered,
        human_bytes(bytes as f64),
        secs,
        human_bytes(rate),
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
    if report.io.retries + report.io.throttled > 0 {
        writeln!(
            out,
            "  retries: {}, throttled waits: {}",
            report.io.retries, report.io.throttled
        )?;
    }
    Ok(())
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
    use super::human_bytes;

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }
}
