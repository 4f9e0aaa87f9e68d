//! `trawl scan --baseline FILE`: report only findings that are not in an
//! earlier run's output.
//!
//! Suppression is a sink wrapper, not an engine or scheduler feature: the
//! scan finds everything, and only what is written is filtered, so the
//! scan's own counts stay exact and the summary can say how many findings
//! the baseline hid.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::Path;

use anyhow::{Context, Result, bail};
use trawl::{EventSink, Finding};

/// The fingerprints of a baseline file: a previous JSONL output of trawl.
#[derive(Debug, Default)]
pub(crate) struct Baseline {
    fingerprints: HashSet<[u8; 32]>,
}

impl Baseline {
    /// Reads a baseline. Every non-blank line must be a JSON object with a
    /// `fingerprint` of 64 hex digits; other fields are not looked at.
    pub(crate) fn read(path: &Path) -> Result<Baseline> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the baseline '{}'", path.display()))?;
        let mut fingerprints = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("baseline '{}' line {}", path.display(), n + 1);
            let value: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{}: not valid JSON", at()))?;
            let Some(hex) = value.get("fingerprint").and_then(|f| f.as_str()) else {
                bail!(
                    "{}: no \"fingerprint\" string (a baseline is a previous `trawl scan` JSONL output)",
                    at()
                );
            };
            let Some(fingerprint) = parse_hex(hex) else {
                bail!("{}: the fingerprint {hex:?} is not 64 hex digits", at());
            };
            fingerprints.insert(fingerprint);
        }
        Ok(Baseline { fingerprints })
    }

    /// The number of distinct findings in the baseline.
    pub(crate) fn len(&self) -> usize {
        self.fingerprints.len()
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(out)
}

/// Passes on the findings whose fingerprint is not in the baseline, and
/// counts the others.
pub(crate) struct BaselineSink<S> {
    inner: S,
    baseline: Baseline,
    suppressed: BTreeMap<String, u64>,
}

impl<S: EventSink> BaselineSink<S> {
    pub(crate) fn new(inner: S, baseline: Baseline) -> Self {
        BaselineSink {
            inner,
            baseline,
            suppressed: BTreeMap::new(),
        }
    }

    /// Findings held back, by rule id.
    pub(crate) fn suppressed(&self) -> &BTreeMap<String, u64> {
        &self.suppressed
    }
}

impl<S: EventSink> EventSink for BaselineSink<S> {
    fn finding(&mut self, finding: &Finding) -> io::Result<()> {
        if self.baseline.fingerprints.contains(&finding.fingerprint) {
            *self.suppressed.entry(finding.rule_id.clone()).or_default() += 1;
            return Ok(());
        }
        self.inner.finding(finding)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_hex;

    #[test]
    fn fingerprints_are_64_hex_digits() {
        let hex = "191d9053dca0615a8a6ef660e569f141b19cd28364a169fab020d22fb956aef3";
        assert_eq!(parse_hex(hex).unwrap()[0], 0x19);
        assert!(parse_hex(&hex.to_uppercase()).is_some());
        assert!(parse_hex(&hex[1..]).is_none());
        assert!(parse_hex(&format!("{}zz", &hex[2..])).is_none());
        assert!(parse_hex("+1").is_none());
    }
}
