//! Findings as one SARIF 2.1.0 log, for code-scanning dashboards (GitHub
//! code scanning, Azure DevOps, IDEs).

use std::fmt::Write as _;
use std::io::{self, Write};

use serde_json::json;

use crate::sink::{EventSink, Finding, hex, redact};

/// The JSON schema a [`SarifSink`] log names.
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// The `partialFingerprints` key under which a result carries trawl's
/// fingerprint (SHA-256 of the rule id and the secret): the same secret
/// found again, wherever it moved, is the same alert.
pub const SARIF_FINGERPRINT_KEY: &str = "trawlSecretFingerprint/v1";

/// What a SARIF log says of a rule: its id and what it detects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SarifRule {
    /// The rule id (`aws-access-token`).
    pub id: String,
    /// One sentence on what it detects.
    pub description: String,
}

/// Writes findings as a SARIF 2.1.0 log: one run of the tool `trawl`
/// whose driver lists every rule of the scan (id, description), and one
/// result per finding (level `error`), located by the object's path as a
/// URI and a region (start line and column, end line and column, the
/// byte offsets), with trawl's fingerprint in `partialFingerprints`.
///
/// A SARIF log is meant to be uploaded to a dashboard that others read,
/// so it never carries a whole secret: the message shows its first four
/// characters, with or without `--redact`.
///
/// Columns are 1-based and count bytes, as in the JSON Lines format
/// (SARIF's `unicodeCodePoints` is the same on ASCII lines). The log is
/// complete once [`finish`](EventSink::finish) has run.
#[derive(Debug)]
pub struct SarifSink<W: Write + Send> {
    out: W,
    rules: Vec<SarifRule>,
    version: String,
    started: bool,
    buf: String,
}

impl<W: Write + Send> SarifSink<W> {
    /// A sink writing to `out` a log whose driver is trawl `version` with
    /// `rules`.
    pub fn new(out: W, version: &str, rules: Vec<SarifRule>) -> Self {
        SarifSink {
            out,
            rules,
            version: version.to_owned(),
            started: false,
            buf: String::with_capacity(1024),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Writes everything before the first result, once.
    fn start(&mut self) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let rules: Vec<_> = self
            .rules
            .iter()
            .map(|rule| {
                json!({
                    "id": rule.id,
                    "name": rule.id,
                    "shortDescription": {"text": rule.description},
                    "fullDescription": {"text": rule.description},
                    "help": {"text": format!(
                        "{} Revoke the secret, replace it, and remove it from the object (and its history).",
                        rule.description
                    )},
                    "defaultConfiguration": {"level": "error"},
                    "properties": {"tags": ["security", "secret"], "precision": "high"},
                })
            })
            .collect();
        let driver = json!({
            "name": "trawl",
            "version": self.version,
            "semanticVersion": self.version,
            "informationUri": "https://example.invalid/trawl",
            "rules": rules,
        });
        let head = format!(
            "{{\n  \"$schema\": {},\n  \"version\": \"2.1.0\",\n  \"runs\": [{{\n    \"tool\": {{\"driver\": {}}},\n    \"columnKind\": \"unicodeCodePoints\",\n    \"results\": [",
            json!(SARIF_SCHEMA),
            driver
        );
        self.out.write_all(head.as_bytes())
    }
}

/// A path as a URI reference: URLs (`s3://…`) as they are, other paths
/// percent-encoded byte by byte (all but unreserved characters and `/`),
/// absolute ones as `file://` URIs.
fn uri_of(path: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(path)
        && let Some((scheme, _)) = text.split_once("://")
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return text.to_owned();
    }
    let mut uri = String::with_capacity(path.len() + 8);
    if path.starts_with(b"/") {
        uri.push_str("file://");
    }
    for &b in path {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            uri.push(b as char);
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri
}

/// The line and 1-based column just past the secret's last byte.
fn end_of(f: &Finding) -> (u64, u64) {
    let newlines = f.secret.iter().filter(|&&b| b == b'\n').count() as u64;
    match f.secret.iter().rposition(|&b| b == b'\n') {
        None => (f.line, f.column + f.secret.len() as u64),
        Some(last) => (f.line + newlines, (f.secret.len() - last) as u64),
    }
}

impl<W: Write + Send> EventSink for SarifSink<W> {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        let first = !self.started;
        self.start()?;
        let (end_line, end_column) = end_of(f);
        let shown = redact(&String::from_utf8_lossy(&f.secret));
        let rule_index = self.rules.iter().position(|r| r.id == f.rule_id);
        let mut result = json!({
            "ruleId": f.rule_id,
            "level": "error",
            "message": {"text": format!("{} found: {shown}", f.rule_id)},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": uri_of(&f.path)},
                "region": {
                    "startLine": f.line,
                    "startColumn": f.column,
                    "endLine": end_line,
                    "endColumn": end_column,
                    "byteOffset": f.start,
                    "byteLength": f.end - f.start,
                },
            }}],
            "partialFingerprints": {SARIF_FINGERPRINT_KEY: hex(&f.fingerprint)},
        });
        if let Some(index) = rule_index {
            result["ruleIndex"] = json!(index);
        }
        self.buf.clear();
        self.buf
            .push_str(if first { "\n      " } else { ",\n      " });
        self.buf.push_str(&result.to_string());
        self.out.write_all(self.buf.as_bytes())
    }

    fn finish(&mut self) -> io::Result<()> {
        let empty = !self.started;
        self.start()?;
        let end: &[u8] = if empty {
            b"]\n  }]\n}\n"
        } else {
            b"\n    ]\n  }]\n}\n"
        };
        self.out.write_all(end)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_uri_references() {
        assert_eq!(uri_of(b"src/a b.rs"), "src/a%20b.rs");
        assert_eq!(uri_of(b"/srv/x#1"), "file:///srv/x%231");
        assert_eq!(uri_of(b"dir/\xffname"), "dir/%FFname");
        assert_eq!(uri_of(b"s3://bucket/k%20ey"), "s3://bucket/k%20ey");
        assert_eq!(uri_of(b"a://"), "a://");
        assert_eq!(uri_of(b"weird ://x"), "weird%20%3A//x");
    }

    #[test]
    fn a_region_ends_after_the_secret_even_across_lines() {
        let mut f = Finding {
            rule_id: "r".into(),
            path: (*b"p").into(),
            line: 3,
            column: 5,
            start: 0,
            end: 4,
            secret: b"abcd".to_vec(),
            fingerprint: [0; 32],
            context: Default::default(),
        };
        assert_eq!(end_of(&f), (3, 9));
        f.secret = b"ab\ncd\nxyz".to_vec();
        assert_eq!(end_of(&f), (5, 4));
    }
}
