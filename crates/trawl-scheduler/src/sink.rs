//! Findings and where they go: the `EventSink` trait, and sinks that write
//! them as JSON Lines, one JSON array or CSV, or hand them to several
//! sinks at once.

use std::io::{self, Write};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

/// The version tag of the JSONL finding format (`docs/output.md`).
pub const FINDING_SCHEMA: &str = "trawl.finding/1";

/// A secret found in an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The id of the rule that matched (e.g. `aws-access-token`).
    pub rule_id: String,
    /// The object's path or URL (bytes: need not be UTF-8).
    pub path: Arc<[u8]>,
    /// 1-based line of the secret's first byte.
    pub line: u64,
    /// 1-based column of the secret's first byte, in bytes.
    pub column: u64,
    /// Absolute offset of the secret's first byte in the object.
    pub start: u64,
    /// Absolute offset just past the secret's last byte.
    pub end: u64,
    /// The secret itself (the rule's secret group).
    pub secret: Vec<u8>,
    /// SHA-256 of the rule id, a NUL byte and the secret.
    pub fingerprint: [u8; 32],
    /// The bytes around the secret on its line, for people to read
    /// (the human format); no machine-readable format writes them.
    pub context: LineContext,
}

/// The bytes of a secret's line around it: what a person needs to
/// recognise the place. Bounded, so that a minified file or a binary
/// blob of one long line costs no more than a short line.
///
/// `before` ends just before the secret and `after` starts just after it
/// (on the secret's last line, when it spans lines); neither holds a
/// line end (`\n`, nor the `\r` of a `\r\n`). Each holds at most
/// [`LineContext::MAX_SIDE`] bytes, cut at a character boundary when
/// they are valid UTF-8. They may be shorter than the line:
///
/// - `before` is the whole start of the line exactly when its length is
///   the finding's `column - 1`; otherwise the line begins further left
///   (past the bound, or before the bytes the scan held in memory when it
///   found the secret);
/// - `after` may stop before the line's end, which `after_cut` then says.
///
/// The default, empty, is for findings made without their object's
/// bytes at hand (tests, findings read back from a file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineContext {
    /// The line's bytes just before the secret.
    pub before: Vec<u8>,
    /// The line's bytes just after the secret.
    pub after: Vec<u8>,
    /// The line may go on past `after`.
    pub after_cut: bool,
}

impl LineContext {
    /// The most bytes kept on each side of a secret.
    pub const MAX_SIDE: usize = 80;
}

/// Where a scan's findings go.
///
/// The scheduler calls a sink from one thread only, in the order findings
/// are produced (completion order, not object order). A sink may be slow:
/// the pipeline then slows down, boundedly, and loses nothing. An error
/// stops the scan; it is reported in the `RunReport`.
pub trait EventSink: Send {
    /// Takes one finding.
    fn finding(&mut self, finding: &Finding) -> io::Result<()>;

    /// Called once after the last finding: flush what is buffered.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: EventSink + ?Sized> EventSink for Box<S> {
    fn finding(&mut self, finding: &Finding) -> io::Result<()> {
        (**self).finding(finding)
    }
    fn finish(&mut self) -> io::Result<()> {
        (**self).finish()
    }
}

/// Writes findings as JSON Lines in the stable `trawl.finding/1` format.
///
/// Each line holds `schema`, `rule_id`, `path` (UTF-8, lossy) and
/// `path_b64` when the path is not UTF-8, `line`, `column`, `start`, `end`,
/// `secret` and `secret_b64` when the secret is not UTF-8, and
/// `fingerprint` (hex). With redaction, `secret` is its first 4 characters
/// followed by `…`, and `secret_b64` is left out.
#[derive(Debug)]
pub struct JsonlSink<W: Write + Send> {
    out: W,
    redact: bool,
    line: Vec<u8>,
}

impl<W: Write + Send> JsonlSink<W> {
    /// A sink writing to `out`; `redact` hides all but the start of secrets.
    pub fn new(out: W, redact: bool) -> Self {
        JsonlSink {
            out,
            redact,
            line: Vec::with_capacity(512),
        }
    }

    /// Gives back the writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[derive(Serialize)]
struct FindingLine<'a> {
    schema: &'static str,
    rule_id: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    line: u64,
    column: u64,
    start: u64,
    end: u64,
    secret: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_b64: Option<String>,
    fingerprint: &'a str,
}

/// `bytes` as UTF-8 (lossy), plus their base64 when they are not UTF-8.
fn text_and_b64(bytes: &[u8]) -> (std::borrow::Cow<'_, str>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.into(), None),
        Err(_) => (String::from_utf8_lossy(bytes), Some(BASE64.encode(bytes))),
    }
}

/// The first four characters of a secret followed by `…`.
pub fn redact(secret: &str) -> String {
    let mut shown: String = secret.chars().take(4).collect();
    shown.push('…');
    shown
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

impl FindingLine<'_> {
    /// Appends `f` as one JSON object (no newline) to `out`, its secret
    /// redacted or not.
    fn write(f: &Finding, redact_secret: bool, out: &mut Vec<u8>) -> io::Result<()> {
        let (path, path_b64) = text_and_b64(&f.path);
        let (secret, secret_b64) = text_and_b64(&f.secret);
        let redacted;
        let (secret, secret_b64) = if redact_secret {
            redacted = redact(&secret);
            (redacted.as_str(), None)
        } else {
            (&*secret, secret_b64)
        };
        let fingerprint = hex(&f.fingerprint);
        let record = FindingLine {
            schema: FINDING_SCHEMA,
            rule_id: &f.rule_id,
            path: &path,
            path_b64,
            line: f.line,
            column: f.column,
            start: f.start,
            end: f.end,
            secret,
            secret_b64,
            fingerprint: &fingerprint,
        };
        serde_json::to_writer(out, &record)?;
        Ok(())
    }
}

impl<W: Write + Send> EventSink for JsonlSink<W> {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        self.line.clear();
        FindingLine::write(f, self.redact, &mut self.line)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes findings as one JSON array of the objects [`JsonlSink`] writes
/// a line each (same fields, same redaction), one element per line: for
/// tools that read a whole document. The closing `]` is written by
/// [`finish`](EventSink::finish); an interrupted scan leaves an
/// unterminated array.
#[derive(Debug)]
pub struct JsonArraySink<W: Write + Send> {
    out: W,
    redact: bool,
    line: Vec<u8>,
    started: bool,
}

impl<W: Write + Send> JsonArraySink<W> {
    /// A sink writing to `out`; `redact` as for [`JsonlSink::new`].
    pub fn new(out: W, redact: bool) -> Self {
        JsonArraySink {
            out,
            redact,
            line: Vec::with_capacity(512),
            started: false,
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> EventSink for JsonArraySink<W> {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        self.line.clear();
        self.line
            .extend_from_slice(if self.started { b",\n  " } else { b"[\n  " });
        self.started = true;
        FindingLine::write(f, self.redact, &mut self.line)?;
        self.out.write_all(&self.line)
    }

    fn finish(&mut self) -> io::Result<()> {
        let end: &[u8] = if self.started { b"\n]\n" } else { b"[]\n" };
        self.out.write_all(end)?;
        self.out.flush()
    }
}

/// The header of [`CsvSink`]'s output.
pub const CSV_HEADER: &str = "rule_id,path,line,column,start,end,secret,fingerprint";

/// Writes findings as CSV (RFC 4180: comma-separated, a header line,
/// fields quoted when they hold a comma, a quote or a line break, quotes
/// doubled, CRLF line ends). Paths and secrets that are not UTF-8 are
/// written lossily (U+FFFD): JSON Lines is the lossless format.
///
/// A secret that begins with `=`, `+`, `-` or `@` is written as it is:
/// a spreadsheet may read it as a formula, so open the file as text.
#[derive(Debug)]
pub struct CsvSink<W: Write + Send> {
    out: W,
    redact: bool,
    line: String,
    started: bool,
}

impl<W: Write + Send> CsvSink<W> {
    /// A sink writing to `out`; `redact` as for [`JsonlSink::new`].
    pub fn new(out: W, redact: bool) -> Self {
        CsvSink {
            out,
            redact,
            line: String::with_capacity(256),
            started: false,
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.started {
            self.started = true;
            self.out.write_all(CSV_HEADER.as_bytes())?;
            self.out.write_all(b"\r\n")?;
        }
        Ok(())
    }
}

/// Appends `field` to `line`, quoted if it must be.
fn push_csv_field(line: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        line.push('"');
        line.push_str(&field.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(field);
    }
}

impl<W: Write + Send> EventSink for CsvSink<W> {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        self.header()?;
        let secret = String::from_utf8_lossy(&f.secret);
        let secret = if self.redact {
            redact(&secret)
        } else {
            secret.into_owned()
        };
        let numbers = [f.line, f.column, f.start, f.end].map(|n| n.to_string());
        let fields = [
            f.rule_id.as_str(),
            &String::from_utf8_lossy(&f.path),
            &numbers[0],
            &numbers[1],
            &numbers[2],
            &numbers[3],
            &secret,
            &hex(&f.fingerprint),
        ];
        self.line.clear();
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            push_csv_field(&mut self.line, field);
        }
        self.line.push_str("\r\n");
        self.out.write_all(self.line.as_bytes())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.header()?;
        self.out.flush()
    }
}

/// Hands every finding to each of its sinks, in order: several outputs
/// of one scan. The first error stops the scan (a later sink may then
/// have missed the finding that failed).
#[derive(Default)]
pub struct TeeSink {
    sinks: Vec<Box<dyn EventSink>>,
}

impl TeeSink {
    /// A sink feeding each of `sinks`.
    pub fn new(sinks: Vec<Box<dyn EventSink>>) -> Self {
        TeeSink { sinks }
    }
}

impl std::fmt::Debug for TeeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeSink")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl EventSink for TeeSink {
    fn finding(&mut self, finding: &Finding) -> io::Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.finding(finding))
    }

    fn finish(&mut self) -> io::Result<()> {
        // Every sink is finished, even after one failed; the first error
        // is returned.
        let mut first = Ok(());
        for sink in &mut self.sinks {
            let done = sink.finish();
            if first.is_ok() {
                first = done;
            }
        }
        first
    }
}

/// Buffers every finding and hands them to `inner`, sorted by path then
/// offset, when the scan finishes: stable output for tests and diffs, at
/// the cost of holding all findings in memory.
#[derive(Debug)]
pub struct SortingSink<S: EventSink> {
    inner: S,
    held: Vec<Finding>,
}

impl<S: EventSink> SortingSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        SortingSink {
            inner,
            held: Vec::new(),
        }
    }
}

impl<S: EventSink> EventSink for SortingSink<S> {
    fn finding(&mut self, finding: &Finding) -> io::Result<()> {
        self.held.push(finding.clone());
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.held.sort_by(|a, b| {
            (&a.path, a.start, a.end, &a.rule_id).cmp(&(&b.path, b.start, b.end, &b.rule_id))
        });
        for f in self.held.drain(..) {
            self.inner.finding(&f)?;
        }
        self.inner.finish()
    }
}

/// Collects findings in memory; for tests and library users.
#[derive(Debug, Default, Clone)]
pub struct VecSink {
    /// The findings received, in order.
    pub findings: Vec<Finding>,
}

impl EventSink for VecSink {
    fn finding(&mut self, finding: &Finding) -> io::Result<()> {
        self.findings.push(finding.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(path: &[u8], secret: &[u8]) -> Finding {
        Finding {
            rule_id: "github-pat".into(),
            path: path.into(),
            line: 3,
            column: 9,
            start: 40,
            end: 80,
            secret: secret.to_vec(),
            fingerprint: [0xab; 32],
            context: LineContext::default(),
        }
    }

    fn line_of(f: &Finding, redact: bool) -> String {
        let mut sink = JsonlSink::new(Vec::new(), redact);
        sink.finding(f).unwrap();
        String::from_utf8(sink.into_inner()).unwrap()
    }

    #[test]
    fn utf8_finding_has_no_b64_fields() {
        let line = line_of(&finding(b"src/a.rs", b"ghp_secretvalue"), false);
        assert!(line.starts_with(
            r#"{"schema":"trawl.finding/1","rule_id":"github-pat","path":"src/a.rs","line":3"#
        ));
        assert!(!line.contains("_b64"));
        assert!(line.ends_with("\n"));
    }

    #[test]
    fn non_utf8_path_and_secret_carry_b64() {
        let line = line_of(&finding(b"dir/\xffname", b"ab\xfe\x00cd"), false);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path_b64"], BASE64.encode(b"dir/\xffname"));
        assert_eq!(v["secret_b64"], BASE64.encode(b"ab\xfe\x00cd"));
        assert_eq!(v["path"], "dir/\u{fffd}name");
    }

    #[test]
    fn redaction_keeps_four_characters_and_drops_b64() {
        let line = line_of(&finding(b"a", b"ghp_secret\xff"), true);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["secret"], "ghp_…");
        assert!(v.get("secret_b64").is_none());
        assert!(!line.contains("secret\\u"));
    }

    #[test]
    fn a_json_array_holds_the_jsonl_objects() {
        let (a, b) = (finding(b"a", b"s1"), finding(b"b,\"c", b"s2\xff"));
        let mut sink = JsonArraySink::new(Vec::new(), false);
        for f in [&a, &b] {
            sink.finding(f).unwrap();
        }
        sink.finish().unwrap();
        let text = String::from_utf8(sink.into_inner()).unwrap();
        let array: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        let lines: Vec<serde_json::Value> = [line_of(&a, false), line_of(&b, false)]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(array, lines);
        let mut empty = JsonArraySink::new(Vec::new(), true);
        empty.finish().unwrap();
        assert_eq!(empty.into_inner(), b"[]\n");
    }

    #[test]
    fn csv_quotes_what_it_must_and_always_has_a_header() {
        let mut sink = CsvSink::new(Vec::new(), false);
        sink.finding(&finding(b"dir/a,b \"c\"\n.txt", b"ghp_x"))
            .unwrap();
        sink.finding(&finding(b"plain", b"s\xff")).unwrap();
        sink.finish().unwrap();
        let text = String::from_utf8(sink.into_inner()).unwrap();
        let hex = "ab".repeat(32);
        assert_eq!(
            text,
            format!(
                "{CSV_HEADER}\r\n\
                 github-pat,\"dir/a,b \"\"c\"\"\n.txt\",3,9,40,80,ghp_x,{hex}\r\n\
                 github-pat,plain,3,9,40,80,s\u{fffd},{hex}\r\n"
            )
        );
        let mut redacted = CsvSink::new(Vec::new(), true);
        redacted.finding(&finding(b"p", b"ghp_secret")).unwrap();
        let text = String::from_utf8(redacted.into_inner()).unwrap();
        assert!(
            text.contains(",ghp_…,") && !text.contains("ghp_secret"),
            "{text}"
        );
        let mut empty = CsvSink::new(Vec::new(), false);
        empty.finish().unwrap();
        assert_eq!(empty.into_inner(), format!("{CSV_HEADER}\r\n").as_bytes());
    }

    #[test]
    fn a_tee_feeds_and_finishes_every_sink() {
        let mut tee = TeeSink::new(vec![
            Box::new(JsonlSink::new(Vec::new(), false)),
            Box::new(SortingSink::new(VecSink::default())),
        ]);
        tee.finding(&finding(b"a", b"x")).unwrap();
        tee.finish().unwrap();
        assert_eq!(format!("{tee:?}"), "TeeSink { sinks: 2 }");
    }

    #[test]
    fn sorting_sink_orders_by_path_then_offset() {
        let mut a = finding(b"b", b"x");
        a.start = 5;
        let mut b = finding(b"a", b"x");
        b.start = 9;
        let mut c = finding(b"a", b"x");
        c.start = 1;
        let mut sink = SortingSink::new(VecSink::default());
        for f in [&a, &b, &c] {
            sink.finding(f).unwrap();
        }
        sink.finish().unwrap();
        let order: Vec<_> = sink
            .inner
            .findings
            .iter()
            .map(|f| (f.path.to_vec(), f.start))
            .collect();
        assert_eq!(
            order,
            vec![(b"a".to_vec(), 1), (b"a".to_vec(), 9), (b"b".to_vec(), 5)]
        );
    }
}
